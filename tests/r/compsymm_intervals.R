## intervals() with a compound-symmetry correlation (issue 17): nlme 3.1-162, tight controls, on the
## project's Orthodont (gls as tests/r/gls.R's compsymm and ident_compsymm; in lme a compound
## symmetry beside a random intercept is not identified), with nlme's apVar code on a Richardson
## Hessian (tests/r/richardson_apvar.R).
##   Rscript tests/r/compsymm_intervals.R > tests/r/compsymm_intervals.txt 2>&1   (writes .json)
source("tests/r/orthodont_nlme.R")  # orth, ctl
source("tests/r/richardson_apvar.R")  # with_richardson()
gctl <- glsControl(tolerance = 1e-12, msTol = 1e-12, msMaxIter = 1000, maxIter = 1000)
fits <- list(
  gls_compsymm = function() gls(distance ~ age * Sex, data = orth, correlation = corCompSymm(form = ~ 1 | Subject),
                                control = gctl),
  gls_ident_compsymm = function() gls(distance ~ age * Sex, data = orth, correlation = corCompSymm(form = ~ 1 | Subject),
                                      weights = varIdent(form = ~ 1 | Sex), control = gctl))
tab <- function(d) list(lower = unname(d[, 1]), est = unname(d[, 2]), upper = unname(d[, 3]))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]()
  cat("\n==", name, "\n"); print(summary(f)); print(intervals(f))
  iv <- intervals(with_richardson(fits[[name]]()))
  out[[name]] <- list(logLik = as.numeric(logLik(f)), corStruct = tab(iv$corStruct), sigma = unname(iv$sigma),
    varStruct = if (is.null(iv$varStruct)) NULL else tab(iv$varStruct))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/compsymm_intervals.json")
