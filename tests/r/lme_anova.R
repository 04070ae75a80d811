## anova() of one lme fit (issue 17): nlme's F tests of the fixed-effect terms, sequential
## (type I, the default) and marginal, with the containment rule's denominator df; nlme 3.1-162
## on the project's copies of nlme's Orthodont and Oats (tests/r/data/), with lme's optimizer
## tightened (its defaults stop ~1e-5 short on Oats).
##   Rscript tests/r/lme_anova.R > tests/r/lme_anova.txt 2>&1   (writes tests/r/lme_anova.json)
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
orth <- read.csv("tests/r/data/Orthodont.csv")
orth$Sex <- factor(orth$Sex, levels = c("Male", "Female"))
ortho_levels <- sort(unique(orth$Subject), method = "radix"); orth$Subject <- factor(orth$Subject, levels = ortho_levels)
oats <- read.csv("tests/r/data/Oats.csv")
oats$Block <- factor(oats$Block, levels = c("I", "II", "III", "IV", "V", "VI"))
oats$Variety <- factor(oats$Variety, levels = c("Golden Rain", "Marvellous", "Victory"))
ctl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
fits <- list(
  orth_intercept = lme(distance ~ age * Sex, random = ~ 1 | Subject, data = orth, control = ctl),
  orth_slope = lme(distance ~ age * Sex, random = ~ age | Subject, data = orth, control = ctl),
  orth_ML = lme(distance ~ age * Sex, random = ~ 1 | Subject, data = orth, method = "ML", control = ctl),
  oats_nested = lme(yield ~ nitro * Variety, random = ~ 1 | Block/Variety, data = oats, control = ctl))
tab <- function(a) list(terms = rownames(a), numDF = a$numDF, denDF = a$denDF, F = a[["F-value"]],
                        p = a[["p-value"]])
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(sequential = tab(anova(f)), marginal = tab(anova(f, type = "marginal")))
  cat("\n==", name, "\n"); print(anova(f)); print(anova(f, type = "marginal"))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_anova.json")
