## lmerTest's printed type-III anova tables and coefficient tables at R's default digits (issue 18),
## for tests/test_small_sample.py's printing tests; lme4 with tight controls as small_sample.R.
##   Rscript tests/r/small_sample_print.R > tests/r/small_sample_print.txt 2>&1
suppressPackageStartupMessages(library(lmerTest))
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
ddir <- file.path("tests", "r", "data")
Oats <- read.csv(file.path(ddir, "Oats.csv"), stringsAsFactors = FALSE)
Oats$Block <- factor(Oats$Block, levels = c("I", "II", "III", "IV", "V", "VI"))
Oats$Variety <- factor(Oats$Variety, levels = c("Golden Rain", "Marvellous", "Victory"))
Orthodont <- read.csv(file.path(ddir, "Orthodont.csv"), stringsAsFactors = FALSE)
Orthodont$Sex <- factor(Orthodont$Sex, levels = c("Male", "Female"))
Orthodont$Subject <- factor(Orthodont$Subject, levels = sort(unique(Orthodont$Subject), method = "radix"))
mach <- read.csv(file.path(ddir, "Machines_unbalanced.csv"), stringsAsFactors = FALSE)
mach$Worker <- factor(mach$Worker, levels = 1:6)
mach$Machine <- factor(mach$Machine, levels = c("A", "B", "C"))
fits <- list(oats_nested = lmer(yield ~ nitro * Variety + (1 | Block/Variety), Oats, control = lctl),
             orth_slope = lmer(distance ~ age * Sex + (age | Subject), Orthodont, control = lctl),
             machines_unbalanced = lmer(score ~ Machine + (1 | Worker) + (1 | Worker:Machine), mach, control = lctl))
for (name in names(fits)) {
  cat("== ", name, " anova Satterthwaite\n", sep = ""); print(anova(fits[[name]]))
  cat("== ", name, " anova Kenward-Roger\n", sep = ""); print(anova(fits[[name]], ddf = "Kenward-Roger"))
  cat("== ", name, " coefficients Kenward-Roger\n", sep = "")
  printCoefmat(coef(summary(fits[[name]], ddf = "Kenward-Roger")), digits = max(3, getOption("digits") - 3))
}
cat("== end\n")
print(sessionInfo()$otherPkgs$lmerTest$Version); print(R.version.string)
