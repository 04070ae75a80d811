## Spatial correlation structures with a nugget (issue 17): nlme 3.1-162, tight controls, on
## nlme's BodyWeight (P&B sec. 5.3.2 fits corExp(form = ~ Time, nugget = TRUE) to it), lme and gls.
##   Rscript tests/r/lme_nugget.R > tests/r/lme_nugget.txt 2>&1
## writes tests/r/lme_nugget.json and tests/r/lme_nugget_digits4.txt
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
bw <- read.csv("tests/r/data/BodyWeight.csv")
bw$Rat <- factor(bw$Rat, levels = sort(unique(bw$Rat))); bw$Diet <- factor(bw$Diet)
ctl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
gctl <- glsControl(tolerance = 1e-12, msTol = 1e-12, msMaxIter = 1000, maxIter = 1000)
fits <- list(
  exp_nugget = lme(weight ~ Time * Diet, random = ~ Time | Rat, data = bw, control = ctl,
                   correlation = corExp(value = c(10, 0.1), form = ~ Time | Rat, nugget = TRUE)),
  ratio_nugget = lme(weight ~ Time * Diet, random = ~ 1 | Rat, data = bw, control = ctl,
                     correlation = corRatio(value = c(10, 0.1), form = ~ Time | Rat, nugget = TRUE)),
  gls_exp_nugget = gls(weight ~ Time * Diet, data = bw, control = gctl,
                       correlation = corExp(value = c(10, 0.1), form = ~ Time | Rat, nugget = TRUE)))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(coef = unname(if (inherits(f, "gls")) coef(f) else fixef(f)), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), se = unname(sqrt(diag(vcov(f)))),
    corpar = unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)))
  cat("\n==", name, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_nugget.json")
sink("tests/r/lme_nugget_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
