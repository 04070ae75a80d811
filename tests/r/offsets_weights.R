## Offsets and prior weights in lmer and glmer (lme4 1.1-31, tight controls), on data the
## project already has (tests/r/data/sleepstudy.csv, cbpp.csv) and a simulated Poisson frame
## written beside this script (tests/r/data/poisson_offset.csv).
##   Rscript tests/r/offsets_weights.R > tests/r/offsets_weights.txt 2>&1
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
num <- function(x) if (is.null(x)) NULL else sprintf("%.17g", x)
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
gctl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12, optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
out <- list(meta = list(R = R.version.string, packages = paste("lme4", format(packageVersion("lme4")))))
rec <- function(fit, newdata = NULL) {
  r <- list(fixef = fixef(fit), theta = getME(fit, "theta"), logLik = as.numeric(logLik(fit)),
            sigma = sigma(fit), fitted_head = head(unname(fitted(fit)), 6),
            resid_pearson_head = head(unname(resid(fit, type = "pearson")), 6),
            resid_response_head = head(unname(resid(fit, type = "response")), 6))
  if (!is.null(newdata)) r$predict_new <- unname(predict(fit, newdata = newdata))
  r
}
ss <- read.csv("tests/r/data/sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
ss$off <- 0.5 * ss$Days          # an offset in the response's units
ss$w <- 1 + (ss$Days %% 3)        # prior weights 1, 2, 3
new_ss <- data.frame(Days = c(0, 5), Subject = factor(c(308, 309)), off = c(0, 2.5))
out$lmer_offset <- rec(lmer(Reaction ~ Days + offset(off) + (Days | Subject), ss, control = lctl), new_ss)
out$lmer_offset_arg <- rec(lmer(Reaction ~ Days + (Days | Subject), ss, offset = off, control = lctl))
out$lmer_weights <- rec(lmer(Reaction ~ Days + (Days | Subject), ss, weights = w, control = lctl), new_ss)
out$lmer_weights_ML <- rec(lmer(Reaction ~ Days + (Days | Subject), ss, weights = w, REML = FALSE, control = lctl))

## a polynomial in I() on an integer column, with a correlated and an uncorrelated term
## (mmlib used to evaluate I(Days^2) as Days XOR 2, and warned of non-convergence)
out$lmer_I_power_two_terms <- rec(lmer(Reaction ~ Days + I(Days^2) + (Days | Subject) + (0 + I(Days^2) || Subject),
                                       ss, control = lctl))

set.seed(20261130)
n_g <- 30; per <- 8
pz <- data.frame(g = factor(rep(seq_len(n_g), each = per)), x = round(runif(n_g * per, -1, 1), 3),
                 expected = round(runif(n_g * per, 5, 50), 1))
u <- rnorm(n_g, sd = 0.4)
pz$y <- rpois(nrow(pz), pz$expected * exp(-0.3 + 0.5 * pz$x + u[pz$g]))
if (!file.exists("tests/r/data/poisson_offset.csv")) write.csv(pz, "tests/r/data/poisson_offset.csv", row.names = FALSE)
pz <- read.csv("tests/r/data/poisson_offset.csv"); pz$g <- factor(pz$g)
new_pz <- data.frame(x = c(0, 0.5), g = factor(c(1, 2)), expected = c(10, 20))
out$glmer_poisson_offset <- rec(glmer(y ~ x + offset(log(expected)) + (1 | g), pz, family = poisson, control = gctl), new_pz)
out$glmer_poisson_offset_arg <- rec(glmer(y ~ x + (1 | g), pz, family = poisson, offset = log(expected), control = gctl))

cb <- read.csv("tests/r/data/cbpp.csv"); cb$herd <- factor(cb$herd); cb$period <- factor(cb$period)
cb$prop <- cb$incidence / cb$size
out$glmer_binomial_weights <- rec(glmer(prop ~ period + (1 | herd), cb, family = binomial, weights = size, control = gctl))
out$glmer_binomial_cbind_expr <- rec(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cb,
                                           family = binomial, control = gctl))
fix <- function(x) if (is.list(x)) lapply(x, fix) else if (is.numeric(x)) { y <- as.list(num(x)); names(y) <- names(x); if (is.null(names(x))) unlist(y) else y } else x
txt <- toJSON(fix(out), auto_unbox = TRUE, pretty = TRUE)
txt <- gsub('"(-?[0-9]+[.]?[0-9]*(e[-+]?[0-9]+)?)"', "\\1", txt)  # numbers written as strings at 17 digits
writeLines(txt, "tests/r/offsets_weights.json")
str(out)
