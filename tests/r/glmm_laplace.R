## The Laplace log-likelihood of mod.mig.6 (appendix section 3.1) at lme4's default estimates,
## with lme4's default PIRLS tolerance and with a tight one. Run with R 4.2.2, lme4 1.1-31:
##   tolPwrss 1e-07: -2173.49729487
##   tolPwrss 1e-12: -2173.493128436509   (tests/test_glmm.py checks mmlib against this)
suppressPackageStartupMessages({library(lme4)})
KD <- carData::KosteckiDillon
KD$treatment <- factor(ifelse(KD$time > 0, "yes", "no"))
KD$posttreat <- with(KD, ifelse(time > 0, time, 0))
th <- c(1.30550218436, -0.16429390539, 0.02693700208, 1.30151970217, -0.15679451329, 0.17811217630)
b <- c(-0.2478748043, 2.0495644572, 1.1582674320, 1.0605123887, -0.2682906389)
for (tol in c(1e-7, 1e-12)) {
  f <- glmer(headache ~ medication + treatment + sqrt(posttreat) + (treatment + sqrt(posttreat) | id),
    data = KD, family = binomial, devFunOnly = TRUE, control = glmerControl(tolPwrss = tol))
  print(c(tol, f(c(th, b)) / -2), digits = 12)
}
