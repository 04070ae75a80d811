## Spatial correlation in two dimensions (issue 17): nlme 3.1-162, tight glsControl, on nlme's
## Wheat2 (P&B sec. 5.4.1: 56 wheat varieties on a field, yield correlated by the plots'
## latitude and longitude): fm2Wheat2 (corSpher with a nugget) and corRatio and corExp versions.
##   Rscript tests/r/gls_spatial2d.R > tests/r/gls_spatial2d.txt 2>&1
## writes tests/r/gls_spatial2d.json, tests/r/gls_spatial2d_digits4.txt and tests/r/data/Wheat2.csv
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
write.csv(data.frame(Block = as.character(Wheat2$Block), variety = as.character(Wheat2$variety),
                     yield = Wheat2$yield, latitude = Wheat2$latitude, longitude = Wheat2$longitude),
          "tests/r/data/Wheat2.csv", row.names = FALSE)
wheat <- read.csv("tests/r/data/Wheat2.csv", stringsAsFactors = TRUE)
gctl <- glsControl(tolerance = 1e-12, msTol = 1e-12, msMaxIter = 1000, maxIter = 1000)
fits <- list(
  spher_nugget = gls(yield ~ variety - 1, data = wheat, control = gctl,
                     correlation = corSpher(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE)),
  ratio_nugget = gls(yield ~ variety - 1, data = wheat, control = gctl,
                     correlation = corRatio(c(12.5, 0.2), form = ~ latitude + longitude, nugget = TRUE)),
  exp_manhattan = gls(yield ~ variety - 1, data = wheat, control = gctl,
                      correlation = corExp(10, form = ~ latitude + longitude, metric = "manhattan")))
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(fits)) {
  f <- fits[[name]]
  out[[name]] <- list(coef = unname(coef(f)), se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma,
    logLik = as.numeric(logLik(f)), corpar = unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)))
  cat("\n==", name, "\n"); print(summary(f)$modelStruct); print(logLik(f))
}
## the spherical correlation's likelihood is not smooth (a kink wherever a distance equals the
## range) and has several local maxima here: from c(28, 0.2) nlme stops at range 27.46 (logLik
## -533.9315); an earlier mmlib reached range 36.16, nugget 0.1758 from the same start, where
## nlme's own likelihood (parameters held fixed) is higher:
at_36 <- gls(yield ~ variety - 1, data = wheat, control = gctl,
             correlation = corSpher(c(36.1612584157382, 0.1758377384679242), form = ~ latitude + longitude,
                                    nugget = TRUE, fixed = TRUE))
cat("\n== spherical, nlme's log-likelihood at range 36.16, nugget 0.1758:", format(logLik(at_36), digits = 10), "\n")
out$spher_nugget$logLik_at_other_optimum <- as.numeric(logLik(at_36))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/gls_spatial2d.json")
sink("tests/r/gls_spatial2d_digits4.txt"); options(digits = 4)
for (name in names(fits)) { cat("==", name, "\n"); print(summary(fits[[name]])) }
sink()
