## mod.mig.6 (appendix section 3.1): lme4's own Laplace deviance, minimized to convergence and
## differentiated, against lme4's default fit.  The point: where mmlib and lme4's default fit
## differ, mmlib is at the optimum of lme4's own criterion (when its PIRLS is solved tightly).
##
##   Rscript tests/r/mod_mig_6_optimum.R > tests/r/mod_mig_6_optimum.txt 2>&1
##
## 1. lme4's default fit (glmer, default control), its deviance and estimates;
## 2. lme4's deviance function (devFunOnly = TRUE, tolPwrss = 1e-12: PIRLS solved to 1e-12),
##    minimized over (theta, beta) from the default estimates by nlminb with tight tolerances
##    (theta's diagonal bounded below by 0, as lme4 bounds it), then by a second nlminb from there
##    (nlminb then reports "false convergence": the deviance no longer falls at rounding level,
##    with the gradient 2e-4 on a deviance of 4347);
## 3. the Hessian of that function at the optimum by numDeriv (Richardson extrapolation), and
##    the fixed effects' standard errors from 2 H^-1, as lme4 computes them (use.hessian = TRUE);
## 4. the same deviance function at lme4's default estimates.
## The data are the project's data/KosteckiDillon.csv (carData's KosteckiDillon).
suppressPackageStartupMessages({library(lme4); library(numDeriv)})
cat(R.version.string, "; lme4", format(packageVersion("lme4")), "; numDeriv", format(packageVersion("numDeriv")), "\n")
KD <- read.csv("data/KosteckiDillon.csv")
KD$medication <- factor(KD$medication, levels = c("none", "reduced", "continuing"))
KD$headache <- factor(KD$headache, levels = c("no", "yes"))
KD$treatment <- factor(ifelse(KD$time > 0, "yes", "no"))
KD$posttreat <- with(KD, ifelse(time > 0, time, 0))
form <- headache ~ medication + treatment + sqrt(posttreat) + (treatment + sqrt(posttreat) | id)

default <- glmer(form, data = KD, family = binomial)
th0 <- getME(default, "theta"); b0 <- fixef(default)
cat("\n== 1. lme4's default fit\n")
print(c(deviance = deviance(default), logLik = as.numeric(logLik(default))), digits = 12)
print(fixef(default), digits = 10)
print(sqrt(diag(as.matrix(vcov(default)))), digits = 6)

devfun <- glmer(form, data = KD, family = binomial, devFunOnly = TRUE,
                control = glmerControl(tolPwrss = 1e-12))
lower <- c(getME(default, "lower"), rep(-Inf, length(b0)))
ctrl <- list(eval.max = 10000, iter.max = 10000, rel.tol = 1e-15, x.tol = 1e-12)
opt <- nlminb(c(th0, b0), devfun, lower = lower, control = ctrl)
opt <- nlminb(opt$par, devfun, lower = lower, control = ctrl)
cat("\n== 2. lme4's deviance function (tolPwrss = 1e-12) minimized: convergence", opt$convergence,
    "(", opt$message, ")\n")
est <- opt$par
names(est) <- c(names(th0), names(b0))
print(c(deviance = opt$objective, logLik = -opt$objective / 2), digits = 12)
print(est, digits = 10)
g <- numDeriv::grad(devfun, est)
cat("max |gradient| at the optimum:", format(max(abs(g)), digits = 3), "\n")

H <- numDeriv::hessian(devfun, est)
k <- length(th0)
se <- sqrt(diag(2 * solve(H)))[-(1:k)]
names(se) <- names(b0)
cat("\n== 3. standard errors of the fixed effects from 2 H^-1 (numDeriv Hessian at the optimum)\n")
print(se, digits = 6)
cat("relative differences of lme4's default SEs from these:\n")
print(sqrt(diag(as.matrix(vcov(default)))) / se - 1, digits = 3)

cat("\n== 4. the same deviance function at lme4's default estimates\n")
print(c(deviance = devfun(c(th0, b0)), logLik = -devfun(c(th0, b0)) / 2), digits = 12)
