## Times nlme's fits of the Pinheiro & Bates (2000) models that tests/r/lme_structures.R,
## tests/r/lme_arma_symm.R, tests/r/lme_cor_levels.R and tests/r/varfunc_fitted.R check (pdMat
## classes, several levels, ARMA and general correlations, variance functions, gls, a correlation
## beside two levels, the fitted-values covariate), with nlme's default controls, for benchmarks/pinheiro_bates.py.
## Usage: Rscript benchmarks/pinheiro_bates_r.R <tests/r/data dir> [repetitions]; prints one JSON
## object (median seconds per fit). With a third argument "serve" it times one model per line of
## standard input instead ("<model> <repetitions>"), for benchmarks/pinheiro_bates.py's rounds.
suppressPackageStartupMessages(library(nlme))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
reps <- if (length(args) > 1) as.integer(args[2]) else 5L
rd <- function(name) read.csv(file.path(dir, paste0(name, ".csv")), stringsAsFactors = TRUE)
oats <- rd("Oats"); machines <- rd("Machines"); machines$Worker <- factor(machines$Worker)
assay <- rd("Assay"); assay$Block <- factor(assay$Block); assay$dilut <- factor(assay$dilut)
pixel <- rd("Pixel"); pixel$Dog <- factor(pixel$Dog)
orth <- rd("Orthodont"); orth$Sex <- factor(orth$Sex, levels = c("Male", "Female"))
ovary <- rd("Ovary"); ovary$Mare <- factor(ovary$Mare)
dial <- rd("Dialyzer"); dial$Subject <- factor(dial$Subject); dial$QB <- factor(dial$QB)
wheat <- rd("Wheat2")
OV <- follicles ~ sin(2 * pi * Time) + cos(2 * pi * Time)
DIAL <- rate ~ (pressure + I(pressure^2) + I(pressure^3) + I(pressure^4)) * QB
fits <- list(
  oats_cs = function() lme(yield ~ nitro, data = oats, random = list(Block = pdCompSymm(~ Variety - 1))),
  machines_ident = function() lme(score ~ Machine, data = machines, random = list(Worker = pdIdent(~ Machine - 1))),
  assay_blocked = function() lme(logDens ~ sample * dilut, data = assay,
    random = list(Block = pdBlocked(list(pdIdent(~ 1), pdIdent(~ sample - 1), pdIdent(~ dilut - 1))))),
  pixel = function() lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1)),
  ovary_arma11 = function() lme(OV, data = ovary, random = ~ 1 | Mare, correlation = corARMA(p = 1, q = 1)),
  dial_power = function() lme(DIAL, data = dial, random = ~ pressure + I(pressure^2) | Subject,
                              weights = varPower(form = ~ pressure)),
  dial_constpower = function() lme(DIAL, data = dial, random = ~ pressure + I(pressure^2) | Subject,
                                   weights = varConstPower(form = ~ pressure)),
  orth_comb = function() lme(distance ~ age * Sex, data = orth, random = ~ 1 | Subject,
                             weights = varComb(varIdent(form = ~ 1 | Sex), varPower(form = ~ age))),
  gls_symm_ident = function() gls(distance ~ Sex * I(age - 11), data = orth, correlation = corSymm(form = ~ 1 | Subject),
                                  weights = varIdent(form = ~ 1 | age)),
  gls_arma = function() gls(OV, data = ovary, correlation = corARMA(form = ~ 1 | Mare, p = 1, q = 1)),
  wheat2_ratio = function() gls(yield ~ variety - 1, data = wheat,
                                correlation = corRatio(c(12.5, 0.2), form = ~ latitude + longitude, nugget = TRUE)),
  pixel_exp = function() lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1),
                             correlation = corExp(form = ~ day | Dog/Side)),
  gls_dial_fitted = function() gls(DIAL, data = dial, weights = varPower()),
  orth_fitted = function() lme(distance ~ age * Sex, data = orth, random = ~ 1 | Subject, weights = varPower()))
## each fit timed by Sys.time() (microseconds), as Python's perf_counter times mmlib's: system.time()'s
## elapsed counts whole milliseconds, +-15 % of a 7 ms fit (Oats: medians of 7 and 8 ms by it, 6.6 ms by this)
time_fit <- function(f, reps) median(sapply(seq_len(reps), function(i) {
  start <- Sys.time()
  f()
  as.numeric(Sys.time() - start, units = "secs")
}))
if (length(args) > 2 && args[3] == "serve") {
  ## serving benchmarks/pinheiro_bates.py, which alternates R's and Python's timings of each model:
  ## one line "<model> <repetitions>" in, that model's median seconds out, until end of input
  con <- file("stdin")
  open(con)
  for (f in fits) f()  # warm up every model once
  cat("ready\n")
  repeat {
    line <- readLines(con, n = 1)
    if (length(line) == 0) break
    ask <- strsplit(line, " ")[[1]]
    cat(sprintf("%.6f\n", time_fit(fits[[ask[1]]], as.integer(ask[2]))))
    flush(stdout())
  }
} else {
  out <- sapply(fits, function(f) {
    f()  # warm up
    time_fit(f, reps)
  })
  cat("{", paste(sprintf('"%s": %.6f', names(out), out), collapse = ", "), "}\n")
}
