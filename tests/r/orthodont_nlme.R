## nlme's Orthodont as the project keeps it (tests/r/data/Orthodont.csv: Subject levels sorted,
## Sex Male then Female) and lme's optimizer tightened; sourced by lme_varfunc.R and lme_pdmat.R.
suppressPackageStartupMessages({library(nlme); library(jsonlite)})
orth <- read.csv("tests/r/data/Orthodont.csv")
orth$Sex <- factor(orth$Sex, levels = c("Male", "Female"))
orth$Subject <- factor(orth$Subject, levels = sort(unique(orth$Subject), method = "radix"))
ctl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
