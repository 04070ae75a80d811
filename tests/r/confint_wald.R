## lme4 1.1-31: confint(method = "Wald") of an lmer fit: NA for the covariance parameters and
## sigma, estimate -/+ qnorm(0.975) SE for the fixed effects (issue 18).
##   Rscript tests/r/confint_wald.R > tests/r/confint_wald.txt 2>&1
suppressPackageStartupMessages(library(lme4))
ss <- read.csv("tests/r/data/sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
f <- lmer(Reaction ~ Days + (Days | Subject), ss)
print(confint(f, method = "Wald"), digits = 10)
print(sqrt(diag(as.matrix(vcov(f)))), digits = 12)
