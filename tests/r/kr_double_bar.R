## Kenward-Roger F tests (car::Anova(test = "F"), pbkrtest) for uncorrelated random effects of one
## grouping factor, (x || g) (issue 18); lme4 with tight controls, on sleepstudy and Orthodont.
##   Rscript tests/r/kr_double_bar.R > tests/r/kr_double_bar.txt 2>&1   (writes tests/r/kr_double_bar.json)
suppressPackageStartupMessages({library(lme4); library(car); library(pbkrtest); library(jsonlite)})
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
ss <- read.csv("tests/r/data/sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
orth <- read.csv("tests/r/data/Orthodont.csv")
orth$Sex <- factor(orth$Sex, levels = c("Male", "Female"))
orth$Subject <- factor(orth$Subject, levels = sort(unique(orth$Subject), method = "radix"))
fits <- list(sleep = lmer(Reaction ~ Days + (Days || Subject), ss, control = lctl),
             orth = lmer(distance ~ age * Sex + (age || Subject), orth, control = lctl))
out <- list(meta = list(R = R.version.string, packages = paste("lme4", format(packageVersion("lme4")),
                        "car", format(packageVersion("car")), "pbkrtest", format(packageVersion("pbkrtest")))))
for (name in names(fits)) {
  a <- Anova(fits[[name]], test = "F")
  out[[name]] <- list(terms = rownames(a), F = a$F, Df = a$Df, Df.res = a$Df.res, p = a[["Pr(>F)"]])
  cat("\n==", name, "\n"); print(a)
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/r/kr_double_bar.json")
