## glmer with several random-effects terms (issue 16): crossed, nested, observation-level,
## vector-valued and uncorrelated terms; binomial (logit, probit) and Poisson (log), with
## offsets and cbind() responses. lme4 with tight controls (its defaults stop short of the
## optimum): tolPwrss = 1e-12 and bobyqa to rhoend = 1e-12.
##   Rscript tests/r/glmer_terms.R > tests/r/glmer_terms.txt 2>&1
## Writes tests/r/glmer_terms.json and the data it fitted (tests/r/data/*.csv).
suppressPackageStartupMessages({library(lme4); library(jsonlite); library(numDeriv)})
num <- function(x) if (is.null(x)) NULL else sprintf("%.17g", x)
gctl <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12,
                     optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
out <- list(meta = list(R = R.version.string, packages = paste("lme4", format(packageVersion("lme4")), "numDeriv", format(packageVersion("numDeriv"))),
                        data = list(), factor_levels = list()))
save <- function(d, name) {
  path <- file.path("tests/r/data", paste0(name, ".csv"))
  if (!file.exists(path)) write.csv(d, path, row.names = FALSE)
  out$meta$data[[name]] <<- path
  for (col in names(d)) if (is.factor(d[[col]])) out$meta$factor_levels[[paste0(name, ".", col)]] <<- levels(d[[col]])
}
rec <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  re <- as.data.frame(ranef(fit, condVar = TRUE))  # grpvar, term, grp, condval, condsd: every level
  list(fixef = fixef(fit), se = sqrt(diag(as.matrix(vcov(fit)))), theta = getME(fit, "theta"),
       logLik = as.numeric(logLik(fit)), deviance = deviance(fit), vcov = as.numeric(as.matrix(vcov(fit))),
       varcorr = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, vcov = vc$vcov, sdcor = vc$sdcor),
       ngrps = as.list(ngrps(fit)),
       ranef = list(grpvar = as.character(re$grpvar), term = as.character(re$term), grp = as.character(re$grp),
                         condval = re$condval, condsd = re$condsd),
       fitted_head = head(unname(fitted(fit)), 6), sigma = sigma(fit),
       summary = capture.output(print(summary(fit))))
}
## lme4's standard errors come from a central-difference Hessian with steps of 1e-4 of its
## deviance function, whose PIRLS stops where its relative tolerance lets it: that function's
## value at one point moves by up to ~1e-5 with the previous call's state (3e-4 on grouseticks),
## which reaches the third digit of the SEs (VerbAgg 4e-4; on grouseticks lme4's Hessian is not
## positive definite and it falls back to the conditional covariance). se_numderiv are the SEs
## from numDeriv's Richardson-extrapolated Hessian of the same function at lme4's optimum
## (larger steps, so less of that noise); they carry ~1e-3 of it still.
numderiv_se <- function(fit) {
  dd <- update(fit, devFunOnly = TRUE, control = gctl)
  x <- c(getME(fit, "theta"), fixef(fit))
  sqrt(diag(2 * solve(numDeriv::hessian(dd, x))))[-seq_along(getME(fit, "theta"))]
}
fits <- list()

## 1. VerbAgg: 7,584 answers of 316 people to 24 items, crossed (the issue's benchmark design)
data(VerbAgg)
va <- VerbAgg[, c("r2", "btype", "situ", "mode", "id", "item", "Anger", "Gender")]
save(va, "VerbAgg")
fits$verbagg <- list(data = "VerbAgg", family = "binomial",
  formula = "r2 ~ btype + situ + mode + (1 | id) + (1 | item)")
## 2. grouseticks: ticks on grouse chicks, brood within location, an observation-level effect
data(grouseticks)
gt <- grouseticks[, c("INDEX", "TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION")]
gt$HEIGHTc <- round(as.numeric(scale(gt$HEIGHT)), 10)
save(gt, "grouseticks")
fits$grouse <- list(data = "grouseticks", family = "poisson",
  formula = "TICKS ~ YEAR + HEIGHTc + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)")
## 3. cbpp with an observation-level effect for overdispersion (lme4's ?cbpp)
cb <- read.csv("tests/r/data/cbpp.csv"); cb$herd <- factor(cb$herd); cb$period <- factor(cb$period)
cb$obs <- factor(seq_len(nrow(cb)))
save(cb, "cbpp_obs")
fits$cbpp_obs <- list(data = "cbpp_obs", family = "binomial",
  formula = "cbind(incidence, size - incidence) ~ period + (1 | herd) + (1 | obs)")
## simulated designs (written once, then read back)
set.seed(16)
ns <- 60; ni <- 20
sim <- expand.grid(subj = factor(seq_len(ns)), item = factor(seq_len(ni)))
sim$x <- round(rnorm(nrow(sim)), 4)
sim$cond <- factor(ifelse(as.integer(sim$item) %% 2 == 0, "b", "a"))
us <- cbind(rnorm(ns, sd = 0.8), rnorm(ns, sd = 0.4)); ui <- rnorm(ni, sd = 0.5)
eta <- -0.3 + 0.6 * sim$x + 0.4 * (sim$cond == "b") + us[sim$subj, 1] + us[sim$subj, 2] * sim$x + ui[sim$item]
sim$y <- rbinom(nrow(sim), 1, plogis(eta))
sim$count <- rpois(nrow(sim), exp(0.5 + 0.3 * sim$x + 0.5 * us[sim$subj, 1] + ui[sim$item]))
sim$expo <- round(runif(nrow(sim), 0.5, 2), 3)
save(sim, "crossed_sim")
## 4. a vector-valued term crossed with a scalar one
fits$slope_crossed <- list(data = "crossed_sim", family = "binomial", formula = "y ~ x + cond + (x | subj) + (1 | item)")
## 5. the same with uncorrelated effects (||)
fits$slope_uncorrelated <- list(data = "crossed_sim", family = "binomial", formula = "y ~ x + cond + (x || subj) + (1 | item)")
## 6. a probit link with two crossed terms
fits$probit_crossed <- list(data = "crossed_sim", family = "binomial", link = "probit", formula = "y ~ x + cond + (1 | subj) + (1 | item)")
## 7. Poisson, crossed, with an offset
fits$poisson_offset <- list(data = "crossed_sim", family = "poisson", formula = "count ~ x + offset(log(expo)) + (1 | subj) + (1 | item)")
## 8. nested: classes within schools
set.seed(1616)
nsch <- 25; ncl <- 4; per <- 12
ne <- data.frame(school = factor(rep(seq_len(nsch), each = ncl * per)),
                 class = factor(rep(rep(seq_len(ncl), each = per), nsch)))
ne$x <- round(rnorm(nrow(ne)), 4)
usch <- rnorm(nsch, sd = 0.7); ucl <- rnorm(nsch * ncl, sd = 0.5)
ne$y <- rbinom(nrow(ne), 1, plogis(0.2 + 0.8 * ne$x + usch[ne$school] + ucl[(as.integer(ne$school) - 1) * ncl + as.integer(ne$class)]))
save(ne, "nested_sim")
fits$nested <- list(data = "nested_sim", family = "binomial", formula = "y ~ x + (1 | school/class)")

## 9, 10. lme4's fast first stage (nAGQ = 0: beta inside PIRLS, theta optimized) on two crossed
## terms, and adaptive quadrature with 9 nodes on one scalar term
fits$verbagg_nagq0 <- list(data = "VerbAgg", family = "binomial", nAGQ = 0,
  formula = "r2 ~ btype + situ + mode + (1 | id) + (1 | item)")
fits$verbagg_agq9 <- list(data = "VerbAgg", family = "binomial", nAGQ = 9,
  formula = "r2 ~ btype + situ + mode + (1 | id)")
## 11, 12. other links: cauchit on two crossed terms, the square-root link for counts
fits$cauchit_crossed <- list(data = "crossed_sim", family = "binomial", link = "cauchit",
  formula = "y ~ x + cond + (1 | subj) + (1 | item)")
fits$poisson_sqrt <- list(data = "crossed_sim", family = "poisson", link = "sqrt",
  formula = "count ~ x + (1 | subj) + (1 | item)")
## 13-15. families with a scale parameter (lme4: the Laplace deviance with the family's aic(),
## whose dispersion is deviance / n; sigma = sqrt((Pearson chi-square + |u|^2) / n))
set.seed(1617)
ga <- expand.grid(subj = factor(seq_len(40)), item = factor(seq_len(12)))
ga$x <- round(rnorm(nrow(ga)), 4)
ga$y <- round(rgamma(nrow(ga), shape = 4, rate = 4 / exp(1 + 0.3 * ga$x + rnorm(40, sd = 0.4)[ga$subj] +
                                                         rnorm(12, sd = 0.3)[ga$item])), 5)
ga$yig <- round(1 / sqrt(1 / exp(2 * (0.5 + 0.2 * ga$x + rnorm(40, sd = 0.3)[ga$subj]))) *
                  exp(rnorm(nrow(ga), sd = 0.3)), 5)
ga$x2 <- round(1 + (seq_len(nrow(ga)) %% 3) / 2, 1)  # weights 1, 1.5, 2
save(ga, "gamma_sim")
fits$gamma_log <- list(data = "gamma_sim", family = "Gamma", link = "log",
  formula = "y ~ x + (1 | subj) + (1 | item)")
fits$gamma_inverse <- list(data = "gamma_sim", family = "Gamma", link = "inverse",  # no covariate: 1/mu > 0
  formula = "y ~ 1 + (1 | subj)")
fits$invgauss_log <- list(data = "gamma_sim", family = "inverse.gaussian", link = "log",
  formula = "yig ~ x + (1 | subj)")
## 16, 17. prior weights outside the binomial family (each observation's log-likelihood times
## its weight, as R's family$aic)
fits$poisson_weights <- list(data = "crossed_sim", family = "poisson", weights = "expo",
  formula = "count ~ x + (1 | subj) + (1 | item)")
fits$gamma_weights <- list(data = "gamma_sim", family = "Gamma", link = "log", weights = "x2",
  formula = "y ~ x + (1 | subj)")

frames <- list(VerbAgg = va, grouseticks = gt, cbpp_obs = cb, crossed_sim = sim, nested_sim = ne)
for (name in names(fits)) {
  spec <- fits[[name]]
  fam <- switch(spec$family,
    poisson = poisson(link = if (is.null(spec$link)) "log" else spec$link),
    binomial = binomial(link = if (is.null(spec$link)) "logit" else spec$link),
    Gamma = Gamma(link = spec$link), inverse.gaussian = inverse.gaussian(link = spec$link))
  d <- read.csv(out$meta$data[[spec$data]])
  for (key in names(out$meta$factor_levels)) {
    parts <- strsplit(key, ".", fixed = TRUE)[[1]]
    if (parts[1] == spec$data) d[[parts[2]]] <- factor(d[[parts[2]]], levels = out$meta$factor_levels[[key]])
  }
  nagq <- if (is.null(spec$nAGQ)) 1 else spec$nAGQ
  d$.w <- if (is.null(spec$weights)) 1 else d[[spec$weights]]
  t <- system.time(fit <- glmer(as.formula(spec$formula), data = d, family = fam, nAGQ = nagq,
                                weights = .w, control = gctl))[["elapsed"]]
  r <- rec(fit)
  r$se_numderiv <- if (nagq == 1) numderiv_se(fit) else r$se  # the Laplace stage-2 deviance only
  r$lme4_messages <- as.list(fit@optinfo$conv$lme4$messages)
  r$spec <- spec
  r$seconds <- t
  out[[name]] <- r
  cat("\n==", name, "(", t, "s )\n"); print(summary(fit))
}
fix <- function(x) if (is.list(x)) lapply(x, fix) else if (is.numeric(x)) { y <- as.list(num(x)); names(y) <- names(x); if (is.null(names(x))) unlist(y) else y } else x
txt <- toJSON(fix(out), auto_unbox = TRUE, pretty = TRUE, digits = NA)
txt <- gsub('"(-?[0-9]+[.]?[0-9]*(e[-+]?[0-9]+)?)"', "\\1", txt)
writeLines(txt, "tests/r/glmer_terms.json")
