# bench_report.gp - the chart of docs/bench/report.md (tests/bench/bench_report.sh).
#
#   gnuplot -e "tp='throughput.dat'; lat='latency.dat'; out='report.png'; stamp='...'" bench_report.gp
#
# tp:  one line per path: "label" changes_per_second
# lat: one line per sink set: "label" p50_ms p99_ms max_ms

set terminal pngcairo size 1200,520 font "sans,10"
set output out
set multiplot layout 1,2 title "pgfan benchmark - ".stamp font "sans,11"

set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.7
set grid ytics lc rgb "#dddddd"
set key off
set xtics nomirror noenhanced
set ytics nomirror

# left: throughput
set title "Drain throughput (changes/s, same WAL)"
set ylabel "changes/s"
set yrange [0:*]
set format y "%.0f"
plot tp using 2:xtic(1) lc rgb "#4e79a7", \
     '' using 0:2:(sprintf("%d", $2)) with labels offset 0,0.8 notitle

# right: latency quantiles, log scale (clusters of 3 bars + a gap of 1: bars
# at x - 0.25, x, x + 0.25)
stats lat using 4 nooutput
set title "Commit to durable in every sink (ms, log scale)"
set ylabel "ms"
set logscale y
set yrange [1:STATS_max * 4]
set format y "%g"
set key top left
set style histogram clustered gap 1
plot lat using 2:xtic(1) title "p50" lc rgb "#59a14f", \
     '' using 3 title "p99" lc rgb "#f28e2b", \
     '' using 4 title "max" lc rgb "#e15759", \
     '' using ($0 - 0.25):2:(sprintf("%g", $2)) with labels offset 0,0.8 notitle, \
     '' using ($0):3:(sprintf("%g", $3)) with labels offset 0,0.8 notitle, \
     '' using ($0 + 0.25):4:(sprintf("%g", $4)) with labels offset 0,0.8 notitle

unset multiplot
