## nlme with random effects at two nested levels (issue 17): nlme 3.1-162, tolerances tightened as
## tests/r/nlme_reml.R, on nlme's Pixel (P&B sec. 4.2.3, there fitted by lme): the quadratic in
## day written nonlinearly, pixel ~ b0 + b1*day - exp(lb2)*day^2, with random = list(Dog = b0 + b1
## ~ 1, Side = b0 ~ 1) (as the lme model list(Dog = ~ day, Side = ~ 1)), and with pdDiag at Dog.
##   Rscript tests/r/nlme_levels.R > tests/r/nlme_levels.txt 2>&1
## writes tests/r/nlme_levels.json and tests/r/nlme_levels_digits4.txt
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- nlmeControl(pnlsTol = 1e-6, msTol = 1e-10, tolerance = 1e-8, maxIter = 500, msMaxIter = 500)
pixel <- read.csv("tests/r/data/Pixel.csv", stringsAsFactors = TRUE)
pixel$Dog <- factor(pixel$Dog, levels = as.character(sort(unique(as.integer(as.character(pixel$Dog))))))
fits <- list(
  pixel2 = nlme(pixel ~ b0 + b1 * day - exp(lb2) * day^2, data = pixel, fixed = b0 + b1 + lb2 ~ 1,
                random = list(Dog = b0 + b1 ~ 1, Side = b0 ~ 1), start = c(b0 = 1073, b1 = 6, lb2 = -1),
                control = ctl),
  pixel2_diag = nlme(pixel ~ b0 + b1 * day - exp(lb2) * day^2, data = pixel, fixed = b0 + b1 + lb2 ~ 1,
                     random = list(Dog = pdDiag(b0 + b1 ~ 1), Side = b0 ~ 1), start = c(b0 = 1073, b1 = 6, lb2 = -1),
                     control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  re <- ranef(f)
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), df = unname(f$fixDF$X),
    sd_Dog = unname(sqrt(diag(as.matrix(f$modelStruct$reStruct$Dog)))) * f$sigma,
    sd_Side = unname(sqrt(diag(as.matrix(f$modelStruct$reStruct$Side)))) * f$sigma,
    ranef_Side = unname(as.matrix(re$Side)), ranef_Side_names = rownames(re$Side),
    fitted = unname(fitted(f, level = 0:2)))
  cat("\n==", name, "\n"); print(summary(f))
}
source("tests/r/richardson_apvar.R")  # with_richardson(): the intervals the tests compare with
tab <- function(d) list(lower = unname(d[, 1]), est = unname(d[, 2]), upper = unname(d[, 3]))
for (name in names(fits)) {
  iv <- intervals(with_richardson(update(fits[[name]])))
  out[[name]]$intervals <- list(reStruct = lapply(iv$reStruct, tab), sigma = unname(iv$sigma))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/nlme_levels.json")
sink("tests/r/nlme_levels_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
