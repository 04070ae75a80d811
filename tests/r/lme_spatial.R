## Spatial correlation structures in lme (issue 17): nlme 3.1-162, tight controls, on nlme's
## BodyWeight (Pinheiro & Bates 2000, sec. 5.3.2: rats weighed over 64 days; Time the position).
##   Rscript tests/r/lme_spatial.R > tests/r/lme_spatial.txt 2>&1   (writes tests/r/lme_spatial.json)
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
if (!file.exists("tests/r/data/BodyWeight.csv")) {
  bw <- as.data.frame(BodyWeight)
  write.csv(data.frame(weight = bw$weight, Time = bw$Time, Rat = as.character(bw$Rat), Diet = as.character(bw$Diet)),
            "tests/r/data/BodyWeight.csv", row.names = FALSE)
}
bw <- read.csv("tests/r/data/BodyWeight.csv")
bw$Rat <- factor(bw$Rat, levels = sort(unique(bw$Rat))); bw$Diet <- factor(bw$Diet)
ctl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
structures <- list(exp = corExp, gaus = corGaus, lin = corLin, ratio = corRatio, spher = corSpher)
out <- list(meta = list(R = R.version.string, packages = paste("nlme", format(packageVersion("nlme")))))
for (name in names(structures)) {
  f <- lme(weight ~ Time * Diet, random = ~ Time | Rat, data = bw, control = ctl,
           correlation = structures[[name]](value = 10, form = ~ Time | Rat))
  out[[name]] <- list(fixef = unname(fixef(f)), sigma = f$sigma, logLik = as.numeric(logLik(f)),
    range = unname(coef(f$modelStruct$corStruct, unconstrained = FALSE)))
  cat("\n==", name, "\n"); print(summary(f))
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/lme_spatial.json")
