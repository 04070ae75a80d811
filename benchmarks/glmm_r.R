## Times the appendix's binomial GLMM fits (section 3.1) in R with lme4, for benchmarks/run.py.
## Usage: Rscript benchmarks/glmm_r.R <data dir>; prints one JSON object (seconds, one run each:
## the large fits take tens of seconds).
suppressPackageStartupMessages({library(lme4); library(optimx)})
args <- commandArgs(trailingOnly = TRUE)
KD <- read.csv(file.path(args[1], "KosteckiDillon.csv"))
KD$medication <- factor(KD$medication, levels = c("none", "reduced", "continuing"))
KD$headache <- factor(KD$headache, levels = c("no", "yes"))
KD$treatment <- factor(ifelse(KD$time > 0, "yes", "no"))
KD$pretreat <- ifelse(KD$time > 0, 0, KD$time)
KD$posttreat <- ifelse(KD$time > 0, KD$time, 0)
mig <- "headache ~ medication * (treatment + pretreat + sqrt(posttreat))"
nlminb <- glmerControl(optimizer = "optimx", optCtrl = list(method = "nlminb"))
fits <- list(
  "mod.mig.1" = function() glmer(paste(mig, "+ (treatment + pretreat + sqrt(posttreat) | id)"), KD, binomial),
  "mod.mig.1a" = function() glmer(paste(mig, "+ (treatment + pretreat + sqrt(posttreat) | id)"), KD, binomial,
                                  control = nlminb),
  "mod.mig.2" = function() glmer(paste(mig, '+ (-1 + as.numeric(treatment == "yes") + pretreat + sqrt(posttreat) | id)'),
                                 KD, binomial, control = nlminb),
  "mod.mig.3" = function() glmer(paste(mig, "+ (pretreat + sqrt(posttreat) | id)"), KD, binomial, control = nlminb),
  "mod.mig.4" = function() glmer(paste(mig, "+ (treatment + sqrt(posttreat) | id)"), KD, binomial, control = nlminb),
  "mod.mig.5" = function() glmer(paste(mig, "+ (treatment + pretreat | id)"), KD, binomial),
  "mod.mig.6" = function() glmer(headache ~ medication + treatment + sqrt(posttreat) + (treatment + sqrt(posttreat) | id),
                                 KD, binomial, control = nlminb)
)
out <- list()
for (name in names(fits)) out[[name]] <- suppressWarnings(system.time(fits[[name]]())[["elapsed"]])
cat("{", paste(sprintf('"%s": %.6f', names(out), unlist(out)), collapse = ", "), "}\n")
