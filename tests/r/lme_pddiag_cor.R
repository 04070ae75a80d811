## A pdDiag (and pdBlocked) level beside a within-group correlation (issue 17): nlme 3.1-162, tight
## controls. Ovary with random = pdDiag(~ sin(2*pi*Time)) and corAR1 (P&B's fm2Ovar.lme, sec.
## 5.3.4) and with corARMA(p = 1, q = 1); Orthodont with pdBlocked(pdSymm(~ 1), pdIdent(~ age - 1))
## and corCAR1(~ age).
##   Rscript tests/r/lme_pddiag_cor.R > tests/r/lme_pddiag_cor.txt 2>&1   (writes .json; intervals with
## nlme's apVar code on a Richardson Hessian, where it is positive definite)
source("tests/r/orthodont_nlme.R")  # orth, ctl
ovary <- read.csv("tests/r/data/Ovary.csv")
ovary$Mare <- factor(ovary$Mare, levels = sort(unique(ovary$Mare)))
OV <- follicles ~ sin(2 * pi * Time) + cos(2 * pi * Time)
fits <- list(
  ovary_ar1 = lme(OV, data = ovary, random = list(Mare = pdDiag(~ sin(2 * pi * Time))), correlation = corAR1(),
                  control = ctl),
  ovary_arma = lme(OV, data = ovary, random = list(Mare = pdDiag(~ sin(2 * pi * Time))),
                   correlation = corARMA(p = 1, q = 1), control = ctl),
  orth_blocked_car1 = lme(distance ~ age * Sex, data = orth,
                          random = list(Subject = pdBlocked(list(pdSymm(~ 1), pdIdent(~ age - 1)))),
                          correlation = corCAR1(form = ~ age), control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), stddev = as.numeric(VarCorr(f)[, "StdDev"]),
    corpar = unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)))
  cat("\n==", name, "\n"); print(summary(f))
}
source("tests/r/richardson_apvar.R")  # with_richardson(): the intervals the tests compare with
tab <- function(d) list(lower = unname(d[, 1]), est = unname(d[, 2]), upper = unname(d[, 3]))
for (name in names(fits)) {
  iv <- tryCatch(intervals(with_richardson(update(fits[[name]]))), error = function(e) NULL)
  if (is.null(iv)) next
  out[[name]]$intervals <- list(reStruct = lapply(iv$reStruct, tab), corStruct = tab(iv$corStruct),
                                sigma = unname(iv$sigma))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_pddiag_cor.json")
