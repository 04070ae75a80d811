## pdMat classes in lme (issue 17): pdDiag, nlme 3.1-162, tight controls, on the project's copy
## of nlme's Orthodont (tests/r/data/Orthodont.csv).
##   Rscript tests/r/lme_pdmat.R > tests/r/lme_pdmat.txt 2>&1   (writes tests/r/lme_pdmat.json)
source("tests/r/orthodont_nlme.R")  # orth, ctl
fits <- list(
  diag = lme(distance ~ age * Sex, random = list(Subject = pdDiag(~ age)), data = orth, control = ctl),
  diag_ML = lme(distance ~ age * Sex, random = list(Subject = pdDiag(~ age)), data = orth, method = "ML", control = ctl),
  symm = lme(distance ~ age * Sex, random = list(Subject = pdSymm(~ age)), data = orth, control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  vc <- VarCorr(f)
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), stddev = as.numeric(vc[, "StdDev"]))
  cat("\n==", name, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_pdmat.json")
