## Times the appendix's linear mixed-model fits in R (nlme, lme4), for benchmarks/run.py:
## High School and Beyond (2.1) and the exercise histories with CAR(1) errors (2.4).
## Usage: Rscript benchmarks/lmm_r.R <data dir> <repetitions>; prints one JSON object.
suppressPackageStartupMessages({library(nlme); library(lme4)})
args <- commandArgs(trailingOnly = TRUE)
reps <- if (length(args) > 1) as.integer(args[2]) else 5L
data_dir <- args[1]
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))), "bryk.R"))
fits <- list(
  "bryk.lme.1" = function() lme(mathach ~ meanses*cses + sector*cses, random = ~ cses | school, data = Bryk),
  "bryk.lme.2" = function() lme(mathach ~ meanses*cses + sector*cses, random = ~ 1 | school, data = Bryk),
  "bryk.lme.3" = function() lme(mathach ~ meanses*cses + sector*cses, random = ~ cses - 1 | school, data = Bryk),
  "bryk.lmer.1" = function() lmer(mathach ~ meanses*cses + sector*cses + (cses | school), data = Bryk),
  "bryk.lmer.2" = function() lmer(mathach ~ meanses*cses + sector*cses + (1 | school), data = Bryk),
  "bryk.lmer.1.ML" = function() lmer(mathach ~ meanses*cses + sector*cses + (cses | school), data = Bryk, REML = FALSE),
  "bryk.lmer.2.ML" = function() lmer(mathach ~ meanses*cses + sector*cses + (1 | school), data = Bryk, REML = FALSE)
)
Blackmore <- read.csv(file.path(args[1], "Blackmore.csv"))
Blackmore$group <- factor(Blackmore$group, levels = c("control", "patient"))
Blackmore$log.exercise <- log2(Blackmore$exercise + 5/60)
fits[["bm.lme.1"]] <- function() lme(log.exercise ~ I(age - 8)*group, random = ~ I(age - 8) | subject,
                                     data = Blackmore)
fits[["bm.lme.5"]] <- function() lme(log.exercise ~ I(age - 8)*group, random = ~ 1 | subject,
                                     correlation = corCAR1(form = ~ age | subject), data = Blackmore)
fits[["bm.lme.6"]] <- function() lme(log.exercise ~ I(age - 8)*group, random = ~ I(age - 8) - 1 | subject,
                                     correlation = corCAR1(form = ~ age | subject), data = Blackmore)
Wong <- read.csv(file.path(args[1], "Wong.csv"))
fits[["wong.mod.1"]] <- function() nlme(piq ~ theta1 + theta2*exp(-theta3*days), data = Wong,
  fixed = list(theta1 ~ 1 + sqrt(duration), theta2 ~ 1 + sqrt(duration), theta3 ~ 1),
  random = list(id = list(theta1 ~ 1, theta2 ~ 1)), start = list(fixed = c(100, -2, -10, 0, 0.007)))
fits[["wong.mod.2"]] <- function() nlme(piq ~ theta1 + theta2*exp(-theta3*days), data = Wong,
  fixed = list(theta1 ~ 1 + sqrt(duration), theta2 ~ 1 + sqrt(duration), theta3 ~ 1),
  random = list(id = list(theta1 ~ 1, theta2 ~ 1, theta3 ~ 1)), start = list(fixed = c(100, -2, -10, 0, 0.007)))
out <- list()
for (name in names(fits)) {
  suppressWarnings(fits[[name]]())  # warm up
  t <- sapply(seq_len(reps), function(i) system.time(suppressWarnings(fits[[name]]()))[["elapsed"]])
  out[[name]] <- median(t)
}
cat("{", paste(sprintf('"%s": %.6f', names(out), unlist(out)), collapse = ", "), "}\n")
