## Times one crossed lmer fit in R for benchmarks/peers.py.
## Usage: Rscript benchmarks/crossed_r.R <csv file, or InstEval> <formula> <repetitions>;
## prints one JSON object: the median seconds after a warm-up and the REML criterion.
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
if (args[1] == "InstEval") {
  data <- InstEval
  data$y <- as.numeric(data$y)
} else {
  data <- read.csv(args[1], colClasses = c(a = "character", b = "character"))
}
form <- as.formula(args[2])
reps <- as.integer(args[3])
fit <- suppressWarnings(lmer(form, data))  # warm up
t <- sapply(seq_len(reps), function(i) system.time(suppressWarnings(lmer(form, data)))[["elapsed"]])
cat(sprintf('{"seconds": %.6f, "REMLcrit": %.8f}\n', median(t), REMLcrit(fit)))
