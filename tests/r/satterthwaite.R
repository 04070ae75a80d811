## Satterthwaite's denominator df as lmerTest computes them (issue 18): lmerTest on lme4 fits
## with tight controls, on sleepstudy and Orthodont (tests/r/data/).
##   Rscript tests/r/satterthwaite.R > tests/r/satterthwaite.txt 2>&1   (writes tests/r/satterthwaite.json)
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
ss <- read.csv("tests/r/data/sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
orth <- read.csv("tests/r/data/Orthodont.csv")
orth$Sex <- factor(orth$Sex, levels = c("Male", "Female"))
orth$Subject <- factor(orth$Subject, levels = sort(unique(orth$Subject), method = "radix"))
fits <- list(
  sleep_slope = lmer(Reaction ~ Days + (Days | Subject), ss, control = lctl),
  sleep_uncorrelated = lmer(Reaction ~ Days + (Days || Subject), ss, control = lctl),
  orth_intercept = lmer(distance ~ age * Sex + (1 | Subject), orth, control = lctl),
  orth_slope = lmer(distance ~ age * Sex + (age | Subject), orth, control = lctl),
  orth_slope_ML = lmer(distance ~ age * Sex + (age | Subject), orth, REML = FALSE, control = lctl))
out <- list(meta = list(R = R.version.string, packages = paste("lme4", format(packageVersion("lme4")),
                                                           "lmerTest", format(packageVersion("lmerTest")))))
for (name in names(fits)) {
  s <- coef(summary(fits[[name]]))
  out[[name]] <- list(terms = rownames(s), estimate = unname(s[, "Estimate"]), se = unname(s[, "Std. Error"]),
                      df = unname(s[, "df"]), t = unname(s[, "t value"]), p = unname(s[, "Pr(>|t|)"]))
  cat("\n==", name, "\n"); print(summary(fits[[name]]))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/satterthwaite.json")
