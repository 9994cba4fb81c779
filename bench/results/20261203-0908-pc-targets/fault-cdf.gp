set terminal svg size 900,480 dynamic font 'sans,11' background rgb 'white'
set output 'fault-cdf.svg'
set title "Demand-fault service latency, fault read to page placed (dirty-seq-256M, all repetitions)"
set xlabel "latency, µs (power-of-two buckets)"
set ylabel "fraction of faults"
set logscale x 2
set grid
set key outside right
plot 'fault-cdf.dat' index 0 using 1:2 with steps lw 2 title "1gbit-prio hybrid bubble", 'fault-cdf.dat' index 1 using 1:2 with steps lw 2 title "1gbit-prio hybrid bubble+huge", 'fault-cdf.dat' index 2 using 1:2 with steps lw 2 title "1gbit-prio post bubble", 'fault-cdf.dat' index 3 using 1:2 with steps lw 2 title "1gbit-prio post bubble+huge", 'fault-cdf.dat' index 4 using 1:2 with steps lw 2 title "1gbit-prio post bubble+nodup", 'fault-cdf.dat' index 5 using 1:2 with steps lw 2 title "1gbit-prio post bubble+s4", 'fault-cdf.dat' index 6 using 1:2 with steps lw 2 title "unshaped hybrid bubble", 'fault-cdf.dat' index 7 using 1:2 with steps lw 2 title "unshaped hybrid bubble+huge", 'fault-cdf.dat' index 8 using 1:2 with steps lw 2 title "unshaped post bubble", 'fault-cdf.dat' index 9 using 1:2 with steps lw 2 title "unshaped post bubble+huge", 'fault-cdf.dat' index 10 using 1:2 with steps lw 2 title "unshaped post bubble+nodup", 'fault-cdf.dat' index 11 using 1:2 with steps lw 2 title "unshaped post bubble+s4"
