## High School and Beyond as the appendix builds it (section 2.1), from <data dir>: sourced by
## lmm_r.R and fresh_r.R with `data_dir` set.
MathAchieve <- read.csv(file.path(data_dir, "MathAchieve.csv"))
MathAchSchool <- read.csv(file.path(data_dir, "MathAchSchool.csv"))
Bryk <- MathAchieve[, c("School", "SES", "MathAch")]
names(Bryk) <- tolower(names(Bryk))
mses <- with(Bryk, tapply(ses, school, mean))
sector <- setNames(MathAchSchool$Sector, MathAchSchool$School)
Bryk <- within(Bryk, {
  meanses <- as.vector(mses[as.character(school)])
  cses <- ses - meanses
  sector <- factor(sector[as.character(school)], levels = c("Public", "Catholic"))
  school <- factor(school)
})
