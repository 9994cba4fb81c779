set terminal svg size 900,480 dynamic font 'sans,11' background rgb 'white'
set output 'bytes.svg'
set title "Bytes on the wire / guest RAM (dirty-seq-256M; median)"
set ylabel "ratio"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -25
set key top left
set grid ytics

plot for [i=2:3] 'bytes.dat' using i:xtic(1) title columnheader(i)
