## nlme with a variance function on a covariate (issue 17): nlme 3.1-162, tolerances tightened as
## tests/r/nlme_reml.R. Theoph with pdDiag(lKa + lCl ~ 1) and varExp(form = ~ Time) (P&B sec.
## 8.2 model fm2Theo.nlme with heteroscedastic errors), Loblolly with Asym ~ 1 and
## varPower(form = ~ age).
##   Rscript tests/r/nlme_varfunc.R > tests/r/nlme_varfunc.txt 2>&1
## writes tests/r/nlme_varfunc.json and tests/r/nlme_varfunc_digits4.txt
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- nlmeControl(pnlsTol = 1e-6, msTol = 1e-10, tolerance = 1e-8, maxIter = 500, msMaxIter = 500)
theo <- read.csv("tests/r/data/Theoph.csv"); theo$Subject <- factor(theo$Subject)
lob <- read.csv("tests/r/data/Loblolly.csv"); lob$Seed <- factor(lob$Seed)
fits <- list(
  theoph_exp = nlme(conc ~ Dose * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * Time) - exp(-exp(lKa) * Time)) /
                      (exp(lKa) - exp(lKe)), data = theo, fixed = lKe + lKa + lCl ~ 1,
                    random = pdDiag(lKa + lCl ~ 1), groups = ~ Subject, weights = varExp(form = ~ Time),
                    start = c(lKe = -2.4, lKa = 0.45, lCl = -3.2), control = ctl),
  loblolly_power = nlme(height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age), data = lob,
                        fixed = Asym + R0 + lrc ~ 1, random = Asym ~ 1 | Seed, weights = varPower(form = ~ age),
                        start = c(Asym = 103, R0 = -8.5, lrc = -3.3), control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), stddev = as.numeric(VarCorr(f)[, "StdDev"]),
    varpar = unname(coef(f$modelStruct$varStruct, unconstrained = FALSE)))
  cat("\n==", name, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/nlme_varfunc.json")
sink("tests/r/nlme_varfunc_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
