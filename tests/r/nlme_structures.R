## nlme with a diagonal random-effects covariance and with a covariate in a parameter's random
## part (issue 17): nlme 3.1-162, tolerances tightened as tests/r/nlme_reml.R. Theoph with
## random = pdDiag(lKa + lCl ~ 1) (P&B's fm2Theo.nlme, sec. 8.2, the first-order compartment
## model written out), Loblolly with pdDiag(Asym + lrc ~ 1), Orange with random = Asym ~ 1 + age.
##   Rscript tests/r/nlme_structures.R > tests/r/nlme_structures.txt 2>&1
## writes tests/r/nlme_structures.json, tests/r/nlme_structures_digits4.txt and tests/r/data/Theoph.csv
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- nlmeControl(pnlsTol = 1e-6, msTol = 1e-10, tolerance = 1e-8, maxIter = 500, msMaxIter = 500)
write.csv(data.frame(Subject = as.integer(as.character(Theoph$Subject)), Wt = Theoph$Wt, Dose = Theoph$Dose,
                     Time = Theoph$Time, conc = Theoph$conc), "tests/r/data/Theoph.csv", row.names = FALSE)
theo <- read.csv("tests/r/data/Theoph.csv"); theo$Subject <- factor(theo$Subject)
lob <- read.csv("tests/r/data/Loblolly.csv"); lob$Seed <- factor(lob$Seed)
ora <- read.csv("tests/r/data/Orange.csv"); ora$Tree <- factor(ora$Tree)
fits <- list(
  theoph_diag = nlme(conc ~ Dose * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * Time) - exp(-exp(lKa) * Time)) /
                       (exp(lKa) - exp(lKe)), data = theo, fixed = lKe + lKa + lCl ~ 1,
                     random = pdDiag(lKa + lCl ~ 1), groups = ~ Subject,
                     start = c(lKe = -2.4, lKa = 0.45, lCl = -3.2), control = ctl),
  loblolly_diag = nlme(height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age), data = lob,
                       fixed = Asym + R0 + lrc ~ 1, random = pdDiag(Asym + lrc ~ 1), groups = ~ Seed,
                       start = c(Asym = 103, R0 = -8.5, lrc = -3.3), control = ctl),
  orange_slope = nlme(circumference ~ Asym / (1 + exp((xmid - age) / scal)), data = ora,
                      fixed = Asym + xmid + scal ~ 1, random = Asym ~ 1 + I(age / 1000) | Tree,
                      start = c(Asym = 192, xmid = 728, scal = 353), control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  vc <- VarCorr(f)
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), stddev = as.numeric(vc[, "StdDev"]), re_names = colnames(ranef(f)),
    ranef = unname(as.matrix(ranef(f))))
  cat("\n==", name, "\n"); print(summary(f))
}
## intervals(): as nlme prints them, and with nlme's apVar code on numDeriv's Richardson Hessian
## (see tests/r/lme_structures.R), to test against
tab <- function(d) list(names = rownames(d), lower = unname(d[, 1]), est = unname(d[, 2]), upper = unname(d[, 3]))
for (name in names(fits)) { cat("\n== intervals", name, "\n"); print(intervals(fits[[name]])) }
source("tests/r/richardson_apvar.R")  # with_richardson()
for (name in names(fits)) {
  iv <- intervals(with_richardson(update(fits[[name]])))  # the refit recomputes apVar
  out[[name]]$intervals <- list(fixed = unname(iv$fixed), reStruct = lapply(iv$reStruct, tab), sigma = unname(iv$sigma))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/nlme_structures.json")
## the summaries as the book prints them (options(digits = 4)): tests/r/nlme_structures_digits4.txt
sink("tests/r/nlme_structures_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
