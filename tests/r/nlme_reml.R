## What nlme::nlme(method = "REML") estimates (issue 17): on nlme's Loblolly (one and two random effects) and Orange examples, the
## REML fit has the ML fit's fixed effects and random-effect SDs relative to sigma, sigma scaled
## by sqrt(N / (N - p)), and as log-likelihood the REML criterion of the linearized model there.
## nlme 3.1-162, its tolerances tightened (pnlsTol = 1e-6: tighter stops with "step halving
## factor reduced below minimum in PNLS step").
##   Rscript tests/r/nlme_reml.R > tests/r/nlme_reml.txt 2>&1   (writes tests/r/nlme_reml.json)
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- nlmeControl(pnlsTol = 1e-6, msTol = 1e-10, tolerance = 1e-8, maxIter = 500, msMaxIter = 500)
if (!file.exists("tests/r/data/Loblolly.csv")) write.csv(as.data.frame(Loblolly), "tests/r/data/Loblolly.csv", row.names = FALSE)
if (!file.exists("tests/r/data/Orange.csv")) write.csv(as.data.frame(Orange), "tests/r/data/Orange.csv", row.names = FALSE)
lob <- read.csv("tests/r/data/Loblolly.csv"); lob$Seed <- factor(lob$Seed)
ora <- read.csv("tests/r/data/Orange.csv"); ora$Tree <- factor(ora$Tree)
fits <- list(
  loblolly = function(method) nlme(height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age), data = lob,
    fixed = Asym + R0 + lrc ~ 1, random = Asym ~ 1 | Seed, start = c(Asym = 103, R0 = -8.5, lrc = -3.3),
    method = method, control = ctl),
  loblolly2 = function(method) nlme(height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age), data = lob,
    fixed = Asym + R0 + lrc ~ 1, random = Asym + lrc ~ 1 | Seed, start = c(Asym = 103, R0 = -8.5, lrc = -3.3),
    method = method, control = ctl),
  orange = function(method) nlme(circumference ~ Asym / (1 + exp((xmid - age) / scal)), data = ora,
    fixed = Asym + xmid + scal ~ 1, random = Asym ~ 1 | Tree, start = c(Asym = 192, xmid = 728, scal = 353),
    method = method, control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) for (method in c("ML", "REML")) {
  f <- fits[[name]](method)
  sds <- as.numeric(VarCorr(f)[, "StdDev"])
  out[[paste(name, method, sep = "_")]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))),
    sigma = f$sigma, logLik = as.numeric(logLik(f)), sd_ratio = sds[-length(sds)] / f$sigma,
    varcov = as.numeric(as.matrix(pdMatrix(f$modelStruct$reStruct)[[1]])) * f$sigma^2)
  cat("\n==", name, method, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/nlme_reml.json")
