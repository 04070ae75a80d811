## lme4's times for the several-term GLMM rows of benchmarks/peers.py (default controls, as a
## user runs glmer; the log-likelihoods show where each stops). Reads the data the project
## keeps for its lme4 references (tests/r/data/).
## Usage: Rscript benchmarks/glmer_terms_r.R <tests/r/data dir> <repetitions>; prints one JSON object.
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
reps <- as.integer(args[2])
va <- read.csv(file.path(args[1], "VerbAgg.csv"))
for (v in c("r2", "btype", "situ", "mode", "id", "item")) va[[v]] <- factor(va[[v]])
va$btype <- factor(va$btype, levels = c("curse", "scold", "shout")); va$mode <- factor(va$mode, levels = c("want", "do"))
gt <- read.csv(file.path(args[1], "grouseticks.csv"))
for (v in c("INDEX", "BROOD", "YEAR", "LOCATION")) gt[[v]] <- factor(gt[[v]])
fits <- list(
  verbagg = function() glmer(r2 ~ btype + situ + mode + (1 | id) + (1 | item), va, family = binomial),
  grouse = function() glmer(TICKS ~ YEAR + HEIGHTc + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), gt, family = poisson),
  agq9 = function() glmer(r2 ~ btype + situ + mode + (1 | id), va, family = binomial, nAGQ = 9))
out <- list()
for (name in names(fits)) {
  fit <- suppressWarnings(fits[[name]]())
  t <- sapply(seq_len(reps), function(i) system.time(suppressWarnings(fits[[name]]()))[["elapsed"]])
  out[[paste0(name, "_s")]] <- median(t)
  out[[paste0(name, "_logLik")]] <- as.numeric(logLik(fit))
}
cat("{", paste(sprintf('"%s": %.10g', names(out), unlist(out)), collapse = ", "), "}\n")
