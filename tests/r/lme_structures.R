## pdMat classes beyond pdSymm/pdDiag, random effects at several levels with their own formulas,
## and intervals() (issue 17): nlme 3.1-162, tight controls, on models of Pinheiro & Bates (2000):
## Oats and Machines with pdCompSymm (sec. 4.2.2), Machines with pdIdent, Assay with pdBlocked
## of pdIdent blocks (sec. 4.2.2), Pixel with list(Dog = ~ day, Side = ~ 1) (sec. 4.2.3).
##   Rscript tests/r/lme_structures.R > tests/r/lme_structures.txt 2>&1
## writes tests/r/lme_structures.json and the data it fits (tests/r/data/Assay.csv, Pixel.csv).
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
write.csv(data.frame(Block = as.character(Assay$Block), sample = as.character(Assay$sample),
                     dilut = as.character(Assay$dilut), logDens = Assay$logDens),
          "tests/r/data/Assay.csv", row.names = FALSE)
write.csv(data.frame(Dog = as.character(Pixel$Dog), Side = as.character(Pixel$Side), day = Pixel$day,
                     pixel = Pixel$pixel), "tests/r/data/Pixel.csv", row.names = FALSE)
oats <- read.csv("tests/r/data/Oats.csv", stringsAsFactors = TRUE)
machines <- read.csv("tests/r/data/Machines.csv", stringsAsFactors = TRUE)
machines$Worker <- factor(machines$Worker)
assay <- read.csv("tests/r/data/Assay.csv", stringsAsFactors = TRUE)
assay$Block <- factor(assay$Block); assay$dilut <- factor(assay$dilut)
pixel <- read.csv("tests/r/data/Pixel.csv", stringsAsFactors = TRUE)
pixel$Dog <- factor(pixel$Dog, levels = as.character(sort(unique(as.integer(as.character(pixel$Dog))))))
fits <- list(
  oats_cs = lme(yield ~ nitro, data = oats, random = list(Block = pdCompSymm(~ Variety - 1)), control = ctl),
  machines_cs = lme(score ~ Machine, data = machines, random = list(Worker = pdCompSymm(~ Machine - 1)),
                    control = ctl),
  machines_ident = lme(score ~ Machine, data = machines, random = list(Worker = pdIdent(~ Machine - 1)),
                       control = ctl),
  machines_ident_ML = lme(score ~ Machine, data = machines, random = list(Worker = pdIdent(~ Machine - 1)),
                          method = "ML", control = ctl),
  assay_blocked = lme(logDens ~ sample * dilut, data = assay,
                      random = list(Block = pdBlocked(list(pdIdent(~ 1), pdIdent(~ sample - 1),
                                                           pdIdent(~ dilut - 1)))), control = ctl),
  pixel = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1), control = ctl),
  pixel_ML = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1), method = "ML",
                 control = ctl),
  pixel_diag = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = pdDiag(~ day), Side = ~ 1),
                   control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
sdcorr <- function(f) {  # every level's standard deviations and correlations, outer level first
  lapply(rev(as.list(f$modelStruct$reStruct)), function(pd) {
    m <- as.matrix(pd) * f$sigma^2; s <- sqrt(diag(m))
    list(names = colnames(m), stddev = unname(s), corr = unname(m / outer(s, s)))
  })
}
for (name in names(fits)) {
  f <- fits[[name]]
  iv <- intervals(f)
  re_iv <- lapply(iv$reStruct, function(d) list(names = rownames(d), lower = d$lower, est = d$est., upper = d$upper))
  out[[name]] <- list(fixef = unname(fixef(f)), fixef_names = names(fixef(f)), se = unname(sqrt(diag(vcov(f)))),
    sigma = f$sigma, logLik = as.numeric(logLik(f)), levels = sdcorr(f), df = unname(f$fixDF$X),
    intervals = list(fixed = unname(iv$fixed), reStruct = re_iv, sigma = unname(iv$sigma)),
    apVar = unname(f$apVar))
  cat("\n==", name, "\n"); print(summary(f)); print(iv)
}
## nlme's apVar takes its Hessian by fdHess with relative step .Machine$double.eps^(1/3) = 6e-6,
## where the log-likelihood's rounding error already moves it (oats_cs: the variance of the
## correlation's parameter 0.74730 at the default step, 0.74846, 0.74839, 0.74814 at steps 1e-4,
## 3e-5, 1e-5), and larger steps leave truncation error: the intervals again with nlme's own
## apVar code but numDeriv's Richardson-extrapolated Hessian, to test against
source("tests/r/richardson_apvar.R")  # with_richardson()
for (name in names(fits)) {
  f <- with_richardson(update(fits[[name]]))  # the refit recomputes apVar
  iv <- intervals(f)
  out[[name]]$intervals_richardson <- list(fixed = unname(iv$fixed), sigma = unname(iv$sigma),
    reStruct = lapply(iv$reStruct, function(d) list(lower = d$lower, est = d$est., upper = d$upper)),
    logLik = as.numeric(logLik(f)))
}
f <- fits$pixel
out$pixel$ranef_Dog <- unname(as.matrix(ranef(f, level = 1)))
out$pixel$ranef_Side <- unname(as.matrix(ranef(f, level = 2)))
out$pixel$ranef_Side_names <- rownames(ranef(f, level = 2))
out$pixel$fitted <- unname(fitted(f, level = 0:2))
out$pixel$coef_Side <- unname(as.matrix(coef(f, level = 2)))
newd <- data.frame(Dog = c("1", "3"), Side = c("R", "L"), day = c(3, 12))
out$pixel$predict_new <- unname(as.matrix(predict(f, newd, level = 0:2)[, -(1:2)]))
cat("\n== pixel: ranef, predict\n"); print(ranef(f, level = 2)[1:4, ]); print(predict(f, newd, level = 0:2))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_structures.json")
## the summaries as the book prints them (options(digits = 4), as the appendix), for the
## printout tests: tests/r/lme_structures_digits4.txt
sink("tests/r/lme_structures_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
