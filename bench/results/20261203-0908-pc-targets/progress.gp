set terminal svg size 900,480 dynamic font 'sans,11' background rgb 'white'
set output 'progress.svg'
set title "Guest progress around the switchover (dirty-seq-256M, link 1gbit-prio, repetition 1)"
set xlabel "seconds from the source pause"
set ylabel "heartbeats per second"
set grid
set key outside right
plot 'progress.dat' index 0 using 1:2 with lines lw 2 title "hybrid/bubble+huge", 'progress.dat' index 1 using 1:2 with lines lw 2 title "hybrid/bubble", 'progress.dat' index 2 using 1:2 with lines lw 2 title "post/bubble+huge", 'progress.dat' index 3 using 1:2 with lines lw 2 title "post/bubble+nodup", 'progress.dat' index 4 using 1:2 with lines lw 2 title "post/bubble+s4", 'progress.dat' index 5 using 1:2 with lines lw 2 title "post/bubble"
