## nlme's apVar with numDeriv's Richardson-extrapolated Hessian in place of fdHess (whose default
## relative step, 6e-6, is within the log-likelihood's rounding error; larger steps leave
## truncation error): the intervals the tests compare with. Sourced by lme_structures.R,
## lme_arma_symm.R and nlme_structures.R: with_richardson(expr) evaluates expr so.
with_richardson <- function(expr) {
  richardson <- function(pars, fun, ..., .relStep, minAbsPar) {
    g <- function(p) fun(p, ...)
    list(Hessian = numDeriv::hessian(g, as.numeric(pars)))
  }
  original <- nlme::fdHess
  assignInNamespace("fdHess", richardson, "nlme")
  on.exit(assignInNamespace("fdHess", original, "nlme"))
  expr
}
