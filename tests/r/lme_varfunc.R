## Variance functions in lme (issue 17): nlme 3.1-162, tight controls, on the project's copy of
## nlme's Orthodont (tests/r/data/Orthodont.csv; Subject levels sorted, Sex Male then Female).
##   Rscript tests/r/lme_varfunc.R > tests/r/lme_varfunc.txt 2>&1   (writes tests/r/lme_varfunc.json)
source("tests/r/orthodont_nlme.R")  # orth, ctl
fits <- list(
  ident = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex), data = orth, control = ctl),
  ident_ML = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex), data = orth,
                 method = "ML", control = ctl),
  power = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varPower(form = ~ age), data = orth, control = ctl),
  exp = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varExp(form = ~ age), data = orth, control = ctl),
  fixed = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varFixed(~ age), data = orth, control = ctl),
  power_strata = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varPower(form = ~ age | Sex), data = orth,
                     control = ctl),
  ident_car1 = lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex),
                   correlation = corCAR1(form = ~ age | Subject), data = orth, control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  vf <- f$modelStruct$varStruct
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), varpar = as.list(coef(vf, unconstrained = FALSE, allCoef = TRUE)),
    sd_ratio = as.numeric(VarCorr(f)[1, "StdDev"]) / f$sigma,
    corpar = if (is.null(f$modelStruct$corStruct)) NULL else coef(f$modelStruct$corStruct, unconstrained = FALSE),
    resid_pearson_head = unname(head(resid(f, type = "pearson"), 6)),
    resid_normalized_head = unname(head(resid(f, type = "normalized"), 6)))
  cat("\n==", name, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_varfunc.json")
