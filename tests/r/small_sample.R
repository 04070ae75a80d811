## Small-sample inference for lmer fits as pbkrtest, lmerTest and lme4 give it (issue 18): a
## battery of ten models covering balanced and unbalanced data, random intercepts, correlated and
## uncorrelated slopes, crossed and nested factors, factor and numeric fixed effects.  Run from the
## repository root:
##
##   Rscript tests/r/small_sample.R > tests/r/small_sample.txt 2>&1   (writes tests/r/small_sample.json)
##
## For every model it records (REML fits, lme4 with bobyqa, rhoend = 1e-12; the optimum is checked
## by an nlminb polish of the REML criterion, recorded as "polish_gain"):
##   theta, sigma, beta, REML criterion; pbkrtest::vcovAdj;
##   car::Anova(test = "F") (Kenward-Roger, pbkrtest): F, Df, Df.res, p;
##   pbkrtest::KRmodcomp with an L matrix and with two nested models: stat, ndf, ddf, F.scaling, p;
##   lmerTest summary(ddf = "Satterthwaite") and summary(ddf = "Kenward-Roger") coefficient tables;
##   lmerTest anova(fit) (type III) with both methods: Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F);
##   lme4 confint(method = "profile") and confint(method = "Wald") (lme4's default .sig01 names).
## Data: tests/r/data/*.csv; Pastes, Penicillin and the two unbalanced subsets are written here when
## missing (delete one to regenerate it); the crossed design is simulated here (set.seed(18)).
## JSON: numbers with 17 significant digits, NA as null; matrices {rownames, colnames, data (rows)}.

suppressPackageStartupMessages({library(lmerTest); library(pbkrtest); library(car)})
options(width = 110)

jnum <- function(v) ifelse(is.finite(v), sprintf("%.17g", v), "null")
jstr <- function(s) ifelse(is.na(s), "null", enc2utf8(encodeString(as.character(s), quote = "\"")))
jatom <- function(v) {
  if (is.factor(v)) v <- as.character(v)
  if (is.logical(v)) return(ifelse(is.na(v), "null", ifelse(v, "true", "false")))
  if (is.numeric(v)) return(jnum(as.numeric(v)))
  jstr(v)
}
to_json <- function(x, ind = "") {
  ind2 <- paste0(ind, "  ")
  if (is.null(x)) return("null")
  if (is.matrix(x)) return(to_json(mat(x), ind))
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(x, to_json, "", ind = ind2)
    if (!is.null(names(x)))
      return(paste0("{\n", paste0(ind2, jstr(names(x)), ": ", items, collapse = ",\n"), "\n", ind, "}"))
    return(paste0("[\n", paste0(ind2, items, collapse = ",\n"), "\n", ind, "]"))
  }
  if (length(x) == 1 && !inherits(x, "AsIs")) return(jatom(x))
  paste0("[", paste(jatom(unclass(x)), collapse = ", "), "]")
}
arr <- function(x) I(if (is.factor(x)) as.character(x) else as.vector(unname(x)))  # always an array
mat <- function(m) {
  m <- as.matrix(m)
  list(rownames = arr(if (is.null(rownames(m))) character() else rownames(m)),
       colnames = arr(if (is.null(colnames(m))) character() else colnames(m)),
       data = lapply(seq_len(nrow(m)), function(i) arr(m[i, ])))
}
show <- function(label, x) { cat("\n--", label, "--\n"); print(x, digits = 10); invisible(x) }

## ------------------------------------------------------------------------------------------ data
ddir <- file.path("tests", "r", "data")
export <- function(name, make) {
  path <- file.path(ddir, paste0(name, ".csv"))
  if (!file.exists(path)) { write.csv(make(), path, row.names = FALSE); cat("wrote", path, "\n") }
  read.csv(path, stringsAsFactors = FALSE)
}
sleepstudy <- read.csv(file.path(ddir, "sleepstudy.csv"))
sleepstudy$Subject <- factor(sleepstudy$Subject, levels = sort(unique(sleepstudy$Subject)))
## unbalanced: six subjects lose days 5-9, and every 13th remaining row is dropped
sleep_unbal <- export("sleepstudy_unbalanced", function() {
  d <- read.csv(file.path(ddir, "sleepstudy.csv"))
  d <- d[!(match(d$Subject, sort(unique(d$Subject))) %% 3 == 0 & d$Days >= 5), ]
  d[seq_len(nrow(d)) %% 13 != 0, ]
})
sleep_unbal$Subject <- factor(sleep_unbal$Subject, levels = sort(unique(sleep_unbal$Subject)))
Orthodont <- read.csv(file.path(ddir, "Orthodont.csv"), stringsAsFactors = FALSE)
Orthodont$Sex <- factor(Orthodont$Sex, levels = c("Male", "Female"))
Orthodont$Subject <- factor(Orthodont$Subject, levels = sort(unique(Orthodont$Subject), method = "radix"))
Machines <- read.csv(file.path(ddir, "Machines.csv"), stringsAsFactors = FALSE)
Machines$Worker <- factor(Machines$Worker, levels = 1:6)
Machines$Machine <- factor(Machines$Machine, levels = c("A", "B", "C"))
## unbalanced: the rows 2, 5, 9, 16, 23, 31, 40 and 50 dropped (cells with one to three replicates)
mach_unbal <- export("Machines_unbalanced", function() {
  read.csv(file.path(ddir, "Machines.csv"))[-c(2, 5, 9, 16, 23, 31, 40, 50), ]
})
mach_unbal$Worker <- factor(mach_unbal$Worker, levels = 1:6)
mach_unbal$Machine <- factor(mach_unbal$Machine, levels = c("A", "B", "C"))
Oats <- read.csv(file.path(ddir, "Oats.csv"), stringsAsFactors = FALSE)
Oats$Block <- factor(Oats$Block, levels = c("I", "II", "III", "IV", "V", "VI"))
Oats$Variety <- factor(Oats$Variety, levels = c("Golden Rain", "Marvellous", "Victory"))
Pastes <- export("Pastes", function() {
  d <- lme4::Pastes
  data.frame(strength = d$strength, batch = as.character(d$batch), cask = as.character(d$cask))
})
Pastes$batch <- factor(Pastes$batch, levels = sort(unique(Pastes$batch)))
Pastes$cask <- factor(Pastes$cask, levels = sort(unique(Pastes$cask)))
Penicillin <- export("Penicillin", function() {
  d <- lme4::Penicillin
  data.frame(diameter = d$diameter, plate = as.character(d$plate), sample = as.character(d$sample))
})
Penicillin$plate <- factor(Penicillin$plate, levels = sort(unique(Penicillin$plate)))
Penicillin$sample <- factor(Penicillin$sample, levels = sort(unique(Penicillin$sample)))
## crossed subjects x items, a numeric and a factor fixed effect, a correlated random slope for
## subjects, about 10% of the cells missing
crossed <- export("crossed_lmm", function() {
  set.seed(18)
  d <- expand.grid(subj = 1:24, item = 1:16)
  d$cond <- ifelse((d$item + d$subj) %% 2 == 0, "a", "b")
  d$x <- round(rnorm(nrow(d)), 4)
  bs <- cbind(rnorm(24, sd = 1.2), rnorm(24, sd = 0.5))
  bi <- rnorm(16, sd = 0.8)
  d$y <- round(2 + 0.6 * d$x + 0.5 * (d$cond == "b") + 0.3 * d$x * (d$cond == "b") + bs[d$subj, 1] +
               bs[d$subj, 2] * d$x + bi[d$item] + rnorm(nrow(d)), 4)
  d[runif(nrow(d)) > 0.1, c("subj", "item", "cond", "x", "y")]
})
crossed$subj <- factor(crossed$subj, levels = 1:24)
crossed$item <- factor(crossed$item, levels = 1:16)
crossed$cond <- factor(crossed$cond, levels = c("a", "b"))

datasets <- list(sleepstudy = sleepstudy, sleepstudy_unbalanced = sleep_unbal, Orthodont = Orthodont,
                 Machines = Machines, Machines_unbalanced = mach_unbal, Oats = Oats, Pastes = Pastes,
                 Penicillin = Penicillin, crossed_lmm = crossed)

## -------------------------------------------------------------------------------------- models
## name = list(formula, data, the smaller model of the nested KRmodcomp (NULL: none), L rows)
models <- list(
  sleep_slope = list("Reaction ~ Days + (Days | Subject)", "sleepstudy", "Reaction ~ 1 + (Days | Subject)"),
  sleep_uncorrelated = list("Reaction ~ Days + (Days || Subject)", "sleepstudy",
                            "Reaction ~ 1 + (Days || Subject)"),
  sleep_unbalanced = list("Reaction ~ Days + (Days | Subject)", "sleepstudy_unbalanced",
                          "Reaction ~ 1 + (Days | Subject)"),
  orth_slope = list("distance ~ age * Sex + (age | Subject)", "Orthodont", "distance ~ age + Sex + (age | Subject)"),
  machines = list("score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", "Machines",
                  "score ~ 1 + (1 | Worker) + (1 | Worker:Machine)"),
  machines_unbalanced = list("score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", "Machines_unbalanced",
                             "score ~ 1 + (1 | Worker) + (1 | Worker:Machine)"),
  oats_nested = list("yield ~ nitro * Variety + (1 | Block/Variety)", "Oats",
                     "yield ~ nitro + (1 | Block/Variety)"),
  pastes_nested = list("strength ~ 1 + (1 | batch/cask)", "Pastes", NULL),
  penicillin_crossed = list("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", NULL),
  crossed_slope = list("y ~ x * cond + (x | subj) + (1 | item)", "crossed_lmm", "y ~ x + cond + (x | subj) + (1 | item)")
)

lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))
polish_gain <- function(fm) {  # how much an nlminb polish lowers the REML criterion
  dfun <- update(fm, devFunOnly = TRUE)
  th <- getME(fm, "theta")
  pol <- nlminb(th, dfun, lower = getME(fm, "lower"), control = list(rel.tol = 1e-15, eval.max = 1e4, iter.max = 1e4))
  dfun(th) - pol$objective
}
kr_stats <- function(kr) {
  t <- kr$test
  list(stat = t["Ftest", "stat"], ndf = t["Ftest", "ndf"], ddf = t["Ftest", "ddf"],
       F.scaling = t["Ftest", "F.scaling"], p.value = t["Ftest", "p.value"], statU = t["FtestU", "stat"])
}
coef_block <- function(s) {
  cf <- coef(s)
  list(terms = arr(rownames(cf)), estimate = arr(cf[, "Estimate"]), se = arr(cf[, "Std. Error"]),
       df = arr(cf[, "df"]), t = arr(cf[, "t value"]), p = arr(cf[, "Pr(>|t|)"]))
}
anova_block <- function(a) {
  list(terms = arr(rownames(a)), SumSq = arr(a[["Sum Sq"]]), MeanSq = arr(a[["Mean Sq"]]), NumDF = arr(a$NumDF),
       DenDF = arr(a$DenDF), F = arr(a[["F value"]]), p = arr(a[["Pr(>F)"]]), heading = attr(a, "heading"))
}

out <- list()
for (name in names(models)) {
  spec <- models[[name]]
  d <- datasets[[spec[[2]]]]
  cat("\n\n################################", name, ":", spec[[1]], "on", spec[[2]], "\n")
  fm <- lmer(as.formula(spec[[1]]), d, control = lctl)
  print(summary(fm, ddf = "Satterthwaite"), digits = 10)
  rec <- list(formula = spec[[1]], data = spec[[2]], theta = arr(getME(fm, "theta")), sigma = sigma(fm),
              beta = arr(fixef(fm)), coef_names = arr(names(fixef(fm))), REMLcrit = REMLcrit(fm),
              polish_gain = polish_gain(fm))
  rec$vcovAdj <- mat(as.matrix(vcovAdj(fm)))
  p <- length(fixef(fm))
  if (p > 1) {
    a <- show("car::Anova(test = 'F')", Anova(fm, test = "F"))
    rec$anova_F <- list(terms = arr(rownames(a)), F = arr(a$F), Df = arr(a$Df), Df.res = arr(a$Df.res),
                        p = arr(a[["Pr(>F)"]]))
  }
  ## L: the last two coefficients jointly (the intercept alone when there is one coefficient)
  L <- if (p == 1) matrix(1, 1, 1) else diag(p)[(max(1, p - 1)):p, , drop = FALSE]
  if (p == 2) L <- rbind(c(1, 0), c(1, 1))  # two rows, not an identity
  colnames(L) <- names(fixef(fm))
  kr <- KRmodcomp(fm, L)
  show("KRmodcomp(fm, L)", kr)
  rec$KR_L <- c(list(L = mat(L)), kr_stats(kr))
  if (!is.null(spec[[3]])) {
    small <- lmer(as.formula(spec[[3]]), d, control = lctl)
    kr2 <- KRmodcomp(fm, small)
    show("KRmodcomp(fm, small)", kr2)
    rec$KR_nested <- c(list(small = spec[[3]]), kr_stats(kr2))
  }
  ## per-coefficient KR df: pbkrtest::get_Lb_ddf and lmerTest's summary
  rec$Lb_ddf <- arr(sapply(seq_len(p), function(i) get_Lb_ddf(fm, diag(p)[i, , drop = FALSE])))
  rec$summary_Satterthwaite <- coef_block(summary(fm, ddf = "Satterthwaite"))
  sk <- summary(fm, ddf = "Kenward-Roger")
  show("summary(ddf = 'Kenward-Roger') coefficients", coef(sk))
  rec$summary_KR <- coef_block(sk)
  a3s <- show("anova(fm) (Satterthwaite)", anova(fm))
  rec$anova3_Satterthwaite <- anova_block(a3s)
  a3k <- show("anova(fm, ddf = 'Kenward-Roger')", anova(fm, ddf = "Kenward-Roger"))
  rec$anova3_KR <- anova_block(a3k)
  ci <- show("confint(method = 'profile')", confint(fm, method = "profile"))
  rec$confint_profile <- mat(ci)
  rec$confint_Wald <- mat(confint(fm, method = "Wald"))
  out[[name]] <- rec
}

out$meta <- list(
  R = R.version.string,
  packages = lapply(c(lme4 = "lme4", lmerTest = "lmerTest", pbkrtest = "pbkrtest", car = "car", Matrix = "Matrix",
                      numDeriv = "numDeriv"), function(p) format(packageVersion(p))),
  controls = "lmerControl(optimizer = 'bobyqa', optCtrl = list(rhobeg = 0.5, rhoend = 1e-12, maxfun = 1e5))",
  data = lapply(names(datasets), function(n) file.path(ddir, paste0(n, ".csv"))),
  factor_levels = list(
    sleepstudy.Subject = arr(levels(sleepstudy$Subject)), sleepstudy_unbalanced.Subject = arr(levels(sleep_unbal$Subject)),
    Orthodont.Sex = arr(levels(Orthodont$Sex)), Orthodont.Subject = arr(levels(Orthodont$Subject)),
    Machines.Worker = arr(levels(Machines$Worker)), Machines.Machine = arr(levels(Machines$Machine)),
    Machines_unbalanced.Worker = arr(levels(mach_unbal$Worker)),
    Machines_unbalanced.Machine = arr(levels(mach_unbal$Machine)),
    Oats.Block = arr(levels(Oats$Block)), Oats.Variety = arr(levels(Oats$Variety)),
    Pastes.batch = arr(levels(Pastes$batch)), Pastes.cask = arr(levels(Pastes$cask)),
    Penicillin.plate = arr(levels(Penicillin$plate)), Penicillin.sample = arr(levels(Penicillin$sample)),
    crossed_lmm.subj = arr(levels(crossed$subj)), crossed_lmm.item = arr(levels(crossed$item)),
    crossed_lmm.cond = arr(levels(crossed$cond))))
names(out$meta$data) <- names(datasets)
cat("\n"); print(out$meta[c("R", "packages")])
writeLines(to_json(out), file.path("tests", "r", "small_sample.json"))
