## gls() (issue 17): nlme 3.1-162 on nlme's Orthodont and BodyWeight (tests/r/data/), with
## correlation structures and variance functions, REML and ML.
##   Rscript tests/r/gls.R > tests/r/gls.txt 2>&1   (writes tests/r/gls.json)
source("tests/r/orthodont_nlme.R")  # orth, ctl
bw <- read.csv("tests/r/data/BodyWeight.csv")
bw$Rat <- factor(bw$Rat, levels = sort(unique(bw$Rat))); bw$Diet <- factor(bw$Diet)
gctl <- glsControl(tolerance = 1e-12, msTol = 1e-12, msMaxIter = 1000, maxIter = 1000)
fits <- list(
  plain = gls(distance ~ age * Sex, data = orth, control = gctl),
  compsymm = gls(distance ~ age * Sex, data = orth, correlation = corCompSymm(form = ~ 1 | Subject), control = gctl),
  ident_compsymm = gls(distance ~ age * Sex, data = orth, correlation = corCompSymm(form = ~ 1 | Subject),
                       weights = varIdent(form = ~ 1 | Sex), control = gctl),
  ar1_ML = gls(distance ~ age * Sex, data = orth, correlation = corAR1(form = ~ 1 | Subject), method = "ML",
               control = gctl),
  car1_power = gls(weight ~ Time * Diet, data = bw, correlation = corCAR1(form = ~ Time | Rat),
                   weights = varPower(form = ~ Time), control = gctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(coef = unname(coef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), AIC = AIC(f), BIC = BIC(f),
    corpar = if (is.null(f$modelStruct$corStruct)) NULL else unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)),
    varpar = if (is.null(f$modelStruct$varStruct)) NULL else unname(coef(f$modelStruct$varStruct, unconstrained = FALSE)))
  cat("\n==", name, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/gls.json")
## anova() of one gls fit: nlme's F tests on n - p denominator df, sequential and marginal
tab <- function(a) list(terms = rownames(a), numDF = a$numDF, F = a[["F-value"]], p = a[["p-value"]])
out2 <- list()
for (name in c("compsymm", "ar1_ML")) {
  f <- fits[[name]]
  out2[[name]] <- list(sequential = tab(anova(f)), marginal = tab(anova(f, type = "marginal")),
                       denDF = f$dims$N - f$dims$p)
  cat("\n== anova", name, "\n"); print(anova(f)); print(anova(f, type = "marginal"))
}
writeLines(toJSON(out2, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/gls_anova.json")
