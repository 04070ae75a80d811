## Times car::Anova(test = "F") with pbkrtest's Kenward-Roger on the High School and Beyond lmer
## fits (7,185 rows, 160 schools), for benchmarks/run.py; the fits themselves are not timed.
## pbkrtest forms the n x n inverse of V (about 400 MB here) and a dense n x n product per
## covariance parameter, so one repetition is the default.
## Usage: Rscript benchmarks/kr_r.R <data dir> [repetitions]; prints one JSON object (seconds).
suppressPackageStartupMessages({library(lme4); library(car); library(pbkrtest)})
args <- commandArgs(trailingOnly = TRUE)
reps <- if (length(args) > 1) as.integer(args[2]) else 1L
data_dir <- args[1]
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))), "bryk.R"))
fits <- list(
  "bryk.lmer.1" = lmer(mathach ~ meanses*cses + sector*cses + (cses | school), data = Bryk),
  "bryk.lmer.2" = lmer(mathach ~ meanses*cses + sector*cses + (1 | school), data = Bryk))
out <- list()
for (name in names(fits)) {
  t <- sapply(seq_len(reps), function(i) system.time(Anova(fits[[name]], test = "F"))[["elapsed"]])
  out[[name]] <- median(t)
}
cat("{", paste(sprintf('"%s": %.6f', names(out), unlist(out)), collapse = ", "), "}\n")
