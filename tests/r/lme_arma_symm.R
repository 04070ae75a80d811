## ARMA and general (corSymm) within-group correlations and the variance functions varConstPower
## and varComb (issue 17): nlme 3.1-162, tight controls, on Pinheiro & Bates (2000) examples:
## Ovary with corARMA (sec. 5.3.4, here with random = ~ 1 | Mare), Orthodont with corSymm
## (sec. 5.3.3; gls with corSymm and varIdent(~ 1 | age) as P&B's fm1Orth.gls), Orthodont with
## varComb (sec. 5.2), Dialyzer with varPower (fm2Dial.lme, sec. 5.2.1) and varConstPower.
##   Rscript tests/r/lme_arma_symm.R > tests/r/lme_arma_symm.txt 2>&1
## writes tests/r/lme_arma_symm.json, tests/r/lme_arma_symm_digits4.txt and tests/r/data/Ovary.csv,
## tests/r/data/Dialyzer.csv.
source("tests/r/orthodont_nlme.R")  # orth, ctl
write.csv(data.frame(Mare = as.integer(as.character(Ovary$Mare)), Time = Ovary$Time, follicles = Ovary$follicles),
          "tests/r/data/Ovary.csv", row.names = FALSE)
write.csv(data.frame(Subject = as.integer(as.character(Dialyzer$Subject)), QB = as.character(Dialyzer$QB),
                     pressure = Dialyzer$pressure, rate = Dialyzer$rate, index = Dialyzer$index),
          "tests/r/data/Dialyzer.csv", row.names = FALSE)
dial <- read.csv("tests/r/data/Dialyzer.csv")
dial$Subject <- factor(dial$Subject, levels = sort(unique(dial$Subject))); dial$QB <- factor(dial$QB)
DIAL <- rate ~ (pressure + I(pressure^2) + I(pressure^3) + I(pressure^4)) * QB
ovary <- read.csv("tests/r/data/Ovary.csv")
ovary$Mare <- factor(ovary$Mare, levels = sort(unique(ovary$Mare)))
gctl <- glsControl(tolerance = 1e-12, msTol = 1e-12, msMaxIter = 1000, maxIter = 1000)
OV <- follicles ~ sin(2 * pi * Time) + cos(2 * pi * Time)
fits <- list(
  ovary_arma11 = lme(OV, data = ovary, random = ~ 1 | Mare, correlation = corARMA(p = 1, q = 1), control = ctl),
  ovary_ma2 = lme(OV, data = ovary, random = ~ 1 | Mare, correlation = corARMA(q = 2), control = ctl),
  ovary_ar2_ML = lme(OV, data = ovary, random = ~ 1 | Mare, correlation = corARMA(p = 2), method = "ML",
                     control = ctl),
  orth_symm = lme(distance ~ age * Sex, data = orth, random = ~ 1 | Subject,
                  correlation = corSymm(form = ~ 1 | Subject), control = ctl),
  dial_power = lme(DIAL, data = dial, random = ~ pressure + I(pressure^2) | Subject,
                   weights = varPower(form = ~ pressure), control = ctl),
  dial_constpower = lme(DIAL, data = dial, random = ~ pressure + I(pressure^2) | Subject,
                        weights = varConstPower(form = ~ pressure), control = ctl),
  orth_comb = lme(distance ~ age * Sex, data = orth, random = ~ 1 | Subject,
                  weights = varComb(varIdent(form = ~ 1 | Sex), varPower(form = ~ age)), control = ctl),
  gls_symm_ident = gls(distance ~ Sex * I(age - 11), data = orth, correlation = corSymm(form = ~ 1 | Subject),
                       weights = varIdent(form = ~ 1 | age), control = gctl),
  gls_arma = gls(OV, data = ovary, correlation = corARMA(form = ~ 1 | Mare, p = 1, q = 1), control = gctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  ms <- f$modelStruct
  out[[name]] <- list(coef = unname(if (inherits(f, "gls")) coef(f) else fixef(f)), se = unname(sqrt(diag(vcov(f)))),
    sigma = f$sigma, logLik = as.numeric(logLik(f)), AIC = AIC(f),
    re_sd = if (inherits(f, "gls")) NULL else as.numeric(VarCorr(f)[1, "StdDev"]),
    corpar = if (is.null(ms$corStruct)) NULL else unname(coef(ms$corStruct, unconstrained = FALSE)),
    varpar = if (is.null(ms$varStruct)) NULL else unname(coef(ms$varStruct, unconstrained = FALSE, allCoef = TRUE)))
  cat("\n==", name, "\n"); print(summary(f))
}
## intervals(): as nlme prints them, and with nlme's apVar code on numDeriv's Richardson-
## extrapolated Hessian (fdHess's default step is within the log-likelihood's rounding error and
## larger ones leave truncation error; see lme_structures.R), to test against
tab <- function(d) if (is.null(d)) NULL else list(names = rownames(d), lower = unname(d[, 1]), est = unname(d[, 2]),
                                                   upper = unname(d[, 3]))
for (name in names(fits)) {
  cat("\n== intervals", name, "\n"); print(tryCatch(intervals(fits[[name]]), error = function(e) conditionMessage(e)))
}
source("tests/r/richardson_apvar.R")  # with_richardson()
for (name in names(fits)) {
  f <- with_richardson(update(fits[[name]]))  # the refit recomputes apVar
  iv <- tryCatch(intervals(f), error = function(e) NULL)
  if (is.null(iv)) { cat("\n==", name, "intervals with the Richardson Hessian: not positive definite\n"); next }
  out[[name]]$intervals <- list(fixed = unname(if (inherits(f, "gls")) iv$coef else iv$fixed),
    corStruct = tab(iv$corStruct), varStruct = tab(iv$varStruct), sigma = unname(iv$sigma),
    reStruct = lapply(iv$reStruct, tab))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_arma_symm.json")
sink("tests/r/lme_arma_symm_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
