## nlme's default variance covariate, the fitted values (varPower() is varPower(form = ~ fitted(.)),
## Pinheiro & Bates 2000, sec. 5.2), in gls and lme, on Orthodont (as tests/r/orthodont_nlme.R
## keeps it) and Dialyzer (tests/r/data/Dialyzer.csv, as tests/r/lme_arma_symm.R wrote it).
##   Rscript tests/r/varfunc_fitted.R > tests/r/varfunc_fitted.txt 2>&1   (writes tests/r/varfunc_fitted.json)
##
## nlme's outer loop (gls, lme.formula): optimize with the covariate held, re-estimate, set the
## covariate to the new fitted values (lme: fitted(lmeSt), the innermost level), and stop once an
## optimization moves no parameter by more than `tolerance`. So it stops where its optimizer no
## longer moves, which at nlme's defaults is short of the fixed point (lme_power_default below:
## its power is 4e-4 from the tight fit's). The references are therefore fitted with optim
## (whose stopping tolerance reltol reaches later iterations; nlminb's is not passed by gls) and
## tolerances near rounding, and for lme a finer difference step for optim's numerical gradient
## (ndeps 1e-5, one per parameter) than its default 1e-3. The likelihood is flat in the variance
## parameter (an SE of ~1 for lme_power's power), so even then R's estimate of it is good to ~1e-5
## relative: `frozen` refits each fit with the covariate frozen at its fitted values (a data
## column, no outer loop), which moves that parameter by about that much.
source("tests/r/orthodont_nlme.R")  # orth
dial <- read.csv("tests/r/data/Dialyzer.csv")
dial$Subject <- factor(dial$Subject, levels = sort(unique(dial$Subject))); dial$QB <- factor(dial$QB)
DIAL <- rate ~ (pressure + I(pressure^2) + I(pressure^3) + I(pressure^4)) * QB
gctl <- glsControl(opt = "optim", msTol = 1e-15, tolerance = 1e-12, msMaxIter = 5000, maxIter = 5000)
lctl <- function(npar) lmeControl(opt = "optim", msTol = 1e-15, reltol = 1e-15, tolerance = 1e-12, msMaxIter = 5000,
                                  maxIter = 5000, niterEM = 100, ndeps = rep(1e-5, npar))
fits <- list(
  gls_power = gls(distance ~ age * Sex, data = orth, weights = varPower(), control = gctl),
  gls_power_ML = gls(distance ~ age * Sex, data = orth, weights = varPower(), method = "ML", control = gctl),
  gls_dial_power = gls(DIAL, data = dial, weights = varPower(), control = gctl),
  lme_power = lme(distance ~ age, data = orth, random = ~ 1 | Subject, weights = varPower(), control = lctl(2)),
  lme_power_ML = lme(distance ~ age, data = orth, random = ~ 1 | Subject, weights = varPower(), method = "ML",
                     control = lctl(2)),
  lme_power_strata = lme(distance ~ age * Sex, data = orth, random = ~ 1 | Subject,
                         weights = varPower(form = ~ fitted(.) | Sex), control = lctl(3)),
  lme_exp = lme(distance ~ age * Sex, data = orth, random = ~ 1 | Subject, weights = varExp(), control = lctl(2)),
  lme_dial_power = lme(DIAL, data = dial, random = ~ pressure + I(pressure^2) | Subject, weights = varPower(),
                       control = lctl(7)),
  # nlme's default controls, for the record: where its loop stops
  lme_power_default = lme(distance ~ age, data = orth, random = ~ 1 | Subject, weights = varPower()))
frozen_refit <- function(f, data) {
  data$fv <- fitted(f)  # lme: the innermost level's fitted values, nlme's fitted(lmeSt)
  vf <- f$modelStruct$varStruct
  form <- if (is.null(getGroupsFormula(formula(vf)))) ~ fv else ~ fv | Sex
  g <- update(f, data = data, weights = if (inherits(vf, "varExp")) varExp(form = form) else varPower(form = form))
  list(coef = unname(if (inherits(g, "lme")) fixef(g) else coef(g)),
       varpar = unname(coef(g$modelStruct$varStruct, unconstrained = FALSE)), logLik = as.numeric(logLik(g)))
}
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
cat(R.version.string, "\n", "nlme", format(packageVersion("nlme")), "\n")
for (name in names(fits)) {
  f <- fits[[name]]
  vf <- f$modelStruct$varStruct
  lme_fit <- inherits(f, "lme")
  data <- if (length(fitted(f)) == nrow(dial)) dial else orth
  ci <- intervals(f, which = "var-cov")
  out[[name]] <- list(fixef = unname(if (lme_fit) fixef(f) else coef(f)), se = unname(sqrt(diag(vcov(f)))),
    sigma = f$sigma, logLik = as.numeric(logLik(f)), numIter = f$numIter,
    varpar = as.list(coef(vf, unconstrained = FALSE, allCoef = TRUE)),
    sd_ratio = if (lme_fit) as.numeric(VarCorr(f)[1, "StdDev"]) / f$sigma else NULL,
    frozen = frozen_refit(f, data),
    resid_pearson_head = unname(head(resid(f, type = "pearson"), 6)),
    fitted_head = unname(head(fitted(f), 6)),
    varStruct_interval = unname(ci$varStruct),
    sigma_interval = unname(as.numeric(ci$sigma)),
    reStruct_interval = if (lme_fit) unname(as.matrix(ci$reStruct[[1]])) else NULL)
  cat("\n==", name, "(outer iterations:", f$numIter, ")\n"); print(summary(f))
  print(ci)
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/varfunc_fitted.json")
