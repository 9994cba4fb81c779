# tests/vm/cmocka-lift.awk - a test's output as the VM reports it.
#
# cmocka's per-test result lines become "[  TAG   ] NAME/test" (n is the
# suite line's name), so one suite line may hold a whole cmocka program;
# its summary lines and the "listed below" repeats are dropped, because the
# host prints one summary for the suite.  Every other line is indented, so
# nothing a test prints can be mistaken for a result.
/^\[  (FAILED|SKIPPED) \] [0-9]+ test\(s\), listed below/ { listing = 1; next }
listing && /^\[  (FAILED|SKIPPED) \] / { next }
{ listing = 0 }
/^\[  (PASSED|FAILED|SKIPPED) \] [0-9]+ test\(s\)/ { next }
/^\[(       OK |  FAILED  |  SKIPPED )\] / {
	tag = substr($0, 1, 13)
	rest = substr($0, 14)
	print tag n "/" rest
	next
}
{ print "    " $0 }
