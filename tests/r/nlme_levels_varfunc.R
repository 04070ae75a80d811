## nlme with a variance function and random effects at two nested levels: nlme 3.1-162 on nlme's
## Pixel, the quadratic in day written nonlinearly as tests/r/nlme_levels.R (pixel ~ b0 + b1*day -
## exp(lb2)*day^2, random = list(Dog = b0 + b1 ~ 1, Side = b0 ~ 1)), with varIdent(form = ~ 1 | Side)
## (ML and REML), varExp(form = ~ day) and varPower(form = ~ day1), day1 = day + 1 (ML).
## Controls: the tightest that nlme completes. pnlsTol = 1e-6: at 1e-8 or below every one of these
## fits stops with "step halving factor reduced below minimum in PNLS step" (the PNLS criterion
## cannot get below rounding). tolerance = 1e-10 for the ML fits (each stops at its second iteration,
## where nlminb's LME step takes one iteration: nlme's convIter == 1 rule); the REML fit reaches
## maxIter = 200 without convergence at tolerance 1e-10 (and varExp / varPower with REML at 1e-8 too),
## so varIdent REML uses tolerance = 1e-8. varConstPower(form = ~ day) fails at nlme's start
## ("infinite or missing values in 'x'", day = 0), hence varPower on day + 1.
## And one level, Loblolly with varPower(form = ~ age) by REML (tests/r/nlme_varfunc.R's by ML): with
## REML and a variance function, nlme's variance parameters are the REML estimates of the
## linearized model and the relative covariance the ML one at them (the PNLS step, src/nlme.c
## nlme_increment, re-estimates the relative precision factor by ML), so the fixed effects and the
## power differ from the ML fit's (unlike REML without a variance function: tests/r/nlme_reml.R).
## Correlated errors by ML: corCAR1(form = ~ day | Dog/Side) and corAR1(form = ~ 1 | Dog/Side) at two
## levels (alone, and corCAR1 with varIdent), corCAR1(form = ~ day | Dog/Side) with random effects
## at Dog only (correlation groups finer than the random effects'), and corAR1(form = ~ 1 | Seed) on
## Loblolly at one level. With
## REML nlme's alternation with either correlation at two levels reaches maxIter = 200 at tolerance
## 1e-8 or 1e-10 without converging, so there is no REML fit with a correlation here.
##   Rscript tests/r/nlme_levels_varfunc.R > tests/r/nlme_levels_varfunc.txt 2>&1
## writes tests/r/nlme_levels_varfunc.json and tests/r/nlme_levels_varfunc_digits4.txt
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- nlmeControl(pnlsTol = 1e-6, msTol = 1e-12, tolerance = 1e-10, maxIter = 200, msMaxIter = 500)
ctl_reml <- nlmeControl(pnlsTol = 1e-6, msTol = 1e-12, tolerance = 1e-8, maxIter = 200, msMaxIter = 500)
pixel <- read.csv("tests/r/data/Pixel.csv", stringsAsFactors = TRUE)
pixel$Dog <- factor(pixel$Dog, levels = as.character(sort(unique(as.integer(as.character(pixel$Dog))))))
pixel$day1 <- pixel$day + 1
lob <- read.csv("tests/r/data/Loblolly.csv"); lob$Seed <- factor(lob$Seed)
fit <- function(weights, method = "ML", control = ctl, correlation = NULL)
  nlme(pixel ~ b0 + b1 * day - exp(lb2) * day^2, data = pixel, fixed = b0 + b1 + lb2 ~ 1,
       random = list(Dog = b0 + b1 ~ 1, Side = b0 ~ 1), start = c(b0 = 1073, b1 = 6, lb2 = -1),
       weights = weights, correlation = correlation, method = method, control = control)
calls <- alist(
  ident_ml = fit(varIdent(form = ~ 1 | Side)),
  ident_reml = fit(varIdent(form = ~ 1 | Side), "REML", ctl_reml),
  exp_ml = fit(varExp(form = ~ day)),
  power_ml = fit(varPower(form = ~ day1)),
  loblolly_power_reml = nlme(height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age), data = lob,
                             fixed = Asym + R0 + lrc ~ 1, random = Asym ~ 1 | Seed, weights = varPower(form = ~ age),
                             start = c(Asym = 103, R0 = -8.5, lrc = -3.3), method = "REML", control = ctl_reml),
  car1_ml = fit(NULL, correlation = corCAR1(form = ~ day | Dog/Side)),
  ar1_ml = fit(NULL, correlation = corAR1(form = ~ 1 | Dog/Side)),
  ident_car1_ml = fit(varIdent(form = ~ 1 | Side), correlation = corCAR1(form = ~ day | Dog/Side)),
  car1_dog_ml = nlme(pixel ~ b0 + b1 * day - exp(lb2) * day^2, data = pixel, fixed = b0 + b1 + lb2 ~ 1,
                     random = list(Dog = b0 + b1 ~ 1), start = c(b0 = 1073, b1 = 6, lb2 = -1),
                     correlation = corCAR1(form = ~ day | Dog/Side), control = ctl),
  loblolly_ar1_ml = nlme(height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age), data = lob,
                         fixed = Asym + R0 + lrc ~ 1, random = Asym ~ 1 | Seed, correlation = corAR1(form = ~ 1 | Seed),
                         start = c(Asym = 103, R0 = -8.5, lrc = -3.3), control = ctl))
fits <- lapply(calls, eval)
## normalized residuals: each group's Pearson residuals times the inverse of its correlation matrix's
## Cholesky factor (rows within a group in data order). Not nlme's resid(type = "normalized"): for an
## nlme fit to data not sorted by group (Pixel's rows are Side R for every Dog, then Side L), nlme
## 3.1-162 applies the groups' factors to rows in data order, misaligned (a group's first row is
## then not its Pearson residual); refitted to the data sorted by Dog/Side, nlme's own agree with these.
normalized <- function(f, d) {
  p <- resid(f, type = "pearson")
  C <- corMatrix(f$modelStruct$corStruct)
  key <- if (is.null(d$Side)) as.character(d$Seed) else paste(d$Dog, d$Side, sep = "/")
  out <- unname(p)
  for (k in names(C)) {
    i <- which(key == k)
    stopifnot(length(i) == nrow(C[[k]]))
    out[i] <- forwardsolve(t(chol(C[[k]])), p[i])
  }
  out
}
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  re <- ranef(f)
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), df = unname(f$fixDF$X),
    iterations = f$numIter)
  if (!is.null(f$modelStruct$varStruct)) out[[name]] <- c(out[[name]], list(
    varpar = unname(coef(f$modelStruct$varStruct, unconstrained = FALSE)),
    varpar_names = names(coef(f$modelStruct$varStruct, unconstrained = FALSE))))
  if (!is.null(f$modelStruct$corStruct))
    out[[name]] <- c(out[[name]], list(corpar = unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)),
                                       normalized = normalized(f, if (name == "loblolly_ar1_ml") lob else pixel)))
  if (!is.null(f$modelStruct$reStruct$Side)) out[[name]] <- c(out[[name]], list(
    sd_Dog = unname(sqrt(diag(as.matrix(f$modelStruct$reStruct$Dog)))) * f$sigma,
    sd_Side = unname(sqrt(diag(as.matrix(f$modelStruct$reStruct$Side)))) * f$sigma,
    cor_Dog = unname(cov2cor(as.matrix(f$modelStruct$reStruct$Dog))[1, 2]),
    ranef_Side = unname(as.matrix(re$Side)), ranef_Side_names = rownames(re$Side),
    fitted = unname(fitted(f, level = 0:2))))
  else out[[name]]$sd_random <- unname(sqrt(diag(as.matrix(f$modelStruct$reStruct[[1]])))) * f$sigma
  cat("\n==", name, "\n"); print(summary(f))
  cat("iterations:", f$numIter, "\n")
}
## intervals(): nlme's apVar code on numDeriv's Richardson Hessian (tests/r/richardson_apvar.R), refitted
source("tests/r/richardson_apvar.R")  # with_richardson()
tab <- function(d) list(lower = unname(d[, 1]), est = unname(d[, 2]), upper = unname(d[, 3]))
for (name in names(fits)) {
  iv <- intervals(with_richardson(eval(calls[[name]])))
  out[[name]]$intervals <- list(fixed = tab(iv$fixed), reStruct = lapply(iv$reStruct, tab), sigma = unname(iv$sigma))
  if (!is.null(iv$varStruct)) out[[name]]$intervals$varStruct <- tab(iv$varStruct)
  if (!is.null(iv$corStruct)) out[[name]]$intervals$corStruct <- tab(iv$corStruct)
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/nlme_levels_varfunc.json")
sink("tests/r/nlme_levels_varfunc_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
cat("\n"); print(sessionInfo())
