## R's side of the fresh-process benchmark (benchmarks/peers.py): load lme4, build the data,
## fit bryk.lmer.1 once. The caller times the whole Rscript process, start-up included.
## Usage: Rscript benchmarks/fresh_r.R <data dir>
suppressPackageStartupMessages(library(lme4))
data_dir <- commandArgs(trailingOnly = TRUE)[1]
source(file.path(dirname(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))), "bryk.R"))
fit <- lmer(mathach ~ meanses*cses + sector*cses + (cses | school), data = Bryk)
