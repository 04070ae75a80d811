## A within-group correlation beside random effects at two nested levels: nlme 3.1-162, tight
## controls. Pixel with list(Dog = ~ day, Side = ~ 1) (P&B sec. 4.2.3) and corExp(~ day | Dog/Side),
## by ML with corCAR1, with corExp and varIdent(~ 1 | Side), with pdDiag(~ day) for Dog and corExp, and
## with varIdent(~ 1 | Side) alone (a variance function beside two levels); Oats with ~ 1 | Block/Variety and
## corAR1(~ 1 | Block/Variety), and by ML with corAR1(~ 1 | Block), which nlme replaces by the
## innermost grouping with a warning ("cannot use smaller level of grouping for 'correlation'"), and
## with random = ~ 1 | Block and corAR1(~ 1 | Block/Variety), correlation groups finer than the random
## effects' (one level: fitted, ranef and predict by level skipped there).
##   Rscript tests/r/lme_cor_levels.R > tests/r/lme_cor_levels.txt 2>&1   (writes .json and _digits4.txt; intervals with
## nlme's apVar code on a Richardson Hessian)
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
ctl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
pixel <- read.csv("tests/r/data/Pixel.csv", stringsAsFactors = TRUE)
pixel$Dog <- factor(pixel$Dog, levels = as.character(sort(unique(as.integer(as.character(pixel$Dog))))))
oats <- read.csv("tests/r/data/Oats.csv")
oats$Block <- factor(oats$Block, levels = c("I", "II", "III", "IV", "V", "VI"))
oats$Variety <- factor(oats$Variety, levels = c("Golden Rain", "Marvellous", "Victory"))
fits <- list(
  pixel_exp = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1),
                  correlation = corExp(form = ~ day | Dog/Side), control = ctl),
  pixel_car1_ml = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1), method = "ML",
                      correlation = corCAR1(form = ~ day | Dog/Side), control = ctl),
  pixel_exp_ident = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1),
                        correlation = corExp(form = ~ day | Dog/Side), weights = varIdent(form = ~ 1 | Side),
                        control = ctl),
  pixel_diag_exp = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = pdDiag(~ day), Side = ~ 1),
                       correlation = corExp(form = ~ day | Dog/Side), control = ctl),
  pixel_ident = lme(pixel ~ day + I(day^2), data = pixel, random = list(Dog = ~ day, Side = ~ 1),
                    weights = varIdent(form = ~ 1 | Side), control = ctl),
  oats_ar1 = lme(yield ~ nitro, data = oats, random = ~ 1 | Block/Variety,
                 correlation = corAR1(form = ~ 1 | Block/Variety), control = ctl),
  oats_ar1_outer_ml = lme(yield ~ nitro, data = oats, random = ~ 1 | Block/Variety, method = "ML",
                          correlation = corAR1(form = ~ 1 | Block), control = ctl),
  oats_ar1_finer = lme(yield ~ nitro, data = oats, random = ~ 1 | Block,
                       correlation = corAR1(form = ~ 1 | Block/Variety), control = ctl))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    df = unname(summary(f)$tTable[, "DF"]),
    logLik = as.numeric(logLik(f)),
    # the levels' standard deviations (outer level first) and sigma, at full precision
    stddev = c(unlist(lapply(rev(as.list(f$modelStruct$reStruct)), function(p) sqrt(diag(as.matrix(p))))) * f$sigma,
               f$sigma),
    corpar = if (is.null(f$modelStruct$corStruct)) NULL else unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)),
    varpar = if (is.null(f$modelStruct$varStruct)) NULL else unname(coef(f$modelStruct$varStruct, unconstrained = FALSE)),
    fitted = if (ncol(f$groups) == 2) unname(fitted(f, level = 0:2)),
    ranef_outer = unname(as.matrix(if (ncol(f$groups) == 2) ranef(f)[[1]] else ranef(f))),
    ranef_inner = if (ncol(f$groups) == 2) unname(as.matrix(ranef(f)[[2]])),
    ranef_inner_names = if (ncol(f$groups) == 2) rownames(ranef(f)[[2]]))
  # normalized residuals from the same model refitted on the rows sorted by group: on Pixel's
  # rows (Dog 1 R, 2 R, ..., then the L sides) nlme 3.1-162 whitens the residuals, kept in data
  # order, by the factors of the groups in sorted order (wrong rows); sorted, it is the definition
  d <- f$data
  ord <- if ("Dog" %in% names(d)) order(d$Dog, d$Side) else order(d$Block, d$Variety)
  out[[name]]$sorted_rows <- ord
  out[[name]]$resid_normalized <- unname(resid(update(f, data = d[ord, ]), type = "normalized"))
  cat("\n==", name, "\n"); print(summary(f))
}
source("tests/r/richardson_apvar.R")  # with_richardson(): the intervals the tests compare with
tab <- function(d) list(lower = unname(d[, 1]), est = unname(d[, 2]), upper = unname(d[, 3]))
for (name in names(fits)) {
  iv <- tryCatch(intervals(with_richardson(update(fits[[name]]))), error = function(e) NULL)
  if (is.null(iv)) { cat("\n== intervals", name, ": not available\n"); next }
  cat("\n== intervals", name, "\n"); print(iv)
  out[[name]]$intervals <- list(fixed = tab(iv$fixed), reStruct = lapply(iv$reStruct, tab),
                                corStruct = if (is.null(iv$corStruct)) NULL else tab(iv$corStruct), sigma = unname(iv$sigma),
                                varStruct = if (is.null(iv$varStruct)) NULL else tab(iv$varStruct))
}
f <- fits$pixel_exp
new <- data.frame(Dog = factor(c("1", "4", "4"), levels = levels(pixel$Dog)), Side = c("R", "L", "R"),
                  day = c(2, 5, 10))
out$pixel_exp$predict <- unname(as.matrix(predict(f, new, level = 0:2)[, -(1:2)]))
cat("\n== predict pixel_exp, level = 0:2\n"); print(predict(f, new, level = 0:2))
## gls with the same nested grouping (its groups are Block/Variety's)
g <- gls(yield ~ nitro, data = oats, correlation = corCompSymm(form = ~ 1 | Block/Variety))
cat("\n== gls_cs_nested\n"); print(summary(g))
out$gls_cs_nested <- list(coef = unname(coef(g)), se = unname(sqrt(diag(vcov(g)))), logLik = as.numeric(logLik(g)),
                          corpar = unname(coef(g$modelStruct$corStruct, unconstrained = FALSE)), sigma = g$sigma)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_cor_levels.json")
## the summaries at options(digits = 4), the digits mmlib's printer uses (the tests compare them)
sink("tests/r/lme_cor_levels_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
