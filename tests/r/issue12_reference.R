## R reference values for issue 12 (KR with vector-valued random terms, nested fitted/resid,
## nlme predict with factor covariates and unseen groups, lmer/glmer residuals and conditional
## variances, effects' focal values and t-quantile limits, lmList with exactly determined
## groups, accessors).  Run from the repository root:
##
##   Rscript tests/r/issue12_reference.R > tests/r/issue12_reference.txt 2>&1
##
## It writes tests/r/issue12_reference.json; the console output (.txt) has R's printed summaries.
## The data come from CSV files, read back here so that the reference corresponds exactly to the
## committed data: the project's own data/*.csv (Blackmore, Wong) and tests/r/data/*.csv
## (sleepstudy, Orthodont, Oats, cbpp, Machines).  Those are written from the R packages by this
## script only when missing (write.csv(..., row.names = FALSE)); delete one to regenerate it.
##
## JSON conventions: every number is written with 17 significant digits (sprintf("%.17g"));
## NA, NaN and +-Inf are written as null.  A named numeric vector is an object {name: value}; an
## unnamed one an array.  A matrix is {"rownames", "colnames", "data": [[row 1], [row 2], ...]}
## (row-major).  A data frame is {"rownames", "columns": {name: [values...]}}.  A block whose
## computation failed holds {"error": message}; warnings raised in a block are kept under
## "warnings".
##
## Optimiser settings.  For lmer, bobyqa with rhoend = 1e-12 (below): the suggested nloptwrap
## controls (xtol_abs 1e-10, ftol_abs 1e-12, ftol_rel 1e-14) stop early in this lme4 (1.1-31):
## on sleepstudy they leave the REML criterion 1.5e-9 above bobyqa's, and on Orthodont
## (age * Sex + (age | Subject)) theta differs in the 3rd digit with a criterion 5.6e-6 higher;
## bobyqa with rhoend 1e-12 agreed with a polishing nlminb (rel.tol 1e-15) to every printed digit
## on every model used here.  glmer, lme and nlme use the controls of the brief (see each block).

suppressPackageStartupMessages({
  library(lme4)
  library(nlme)
  library(pbkrtest)
  library(car)
  library(effects)
  library(Matrix)
})
lmList <- nlme::lmList  # lme4 also has an lmList; the nlme one is meant here
options(width = 110)

## ---------------------------------------------------------------------------------------------
## JSON writer (jsonlite's toJSON writes at most 15 significant digits, so numbers are formatted
## here with %.17g)
## ---------------------------------------------------------------------------------------------
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
  if (is.data.frame(x)) return(to_json(df_(x), ind))
  if (is.matrix(x)) return(to_json(mat(x), ind))
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(x, to_json, "", ind = ind2)
    if (!is.null(names(x))) {
      return(paste0("{\n", paste0(ind2, jstr(names(x)), ": ", items, collapse = ",\n"), "\n", ind, "}"))
    }
    return(paste0("[\n", paste0(ind2, items, collapse = ",\n"), "\n", ind, "]"))
  }
  # atomic vector
  if (!is.null(names(x)) && !inherits(x, "AsIs")) {
    return(paste0("{", paste0(jstr(names(x)), ": ", jatom(unclass(x)), collapse = ", "), "}"))
  }
  if (length(x) == 1 && !inherits(x, "AsIs")) return(jatom(x))
  paste0("[", paste(jatom(unclass(x)), collapse = ", "), "]")
}
arr <- function(x) I(if (is.factor(x)) as.character(x) else as.vector(x))  # always an array
named <- function(x) { y <- as.vector(x); names(y) <- names(x); y }          # {name: value}
mat <- function(m) {
  m <- as.matrix(m)
  list(rownames = arr(if (is.null(rownames(m))) character() else rownames(m)),
       colnames = arr(if (is.null(colnames(m))) character() else colnames(m)),
       data = lapply(seq_len(nrow(m)), function(i) arr(unname(m[i, ]))))
}
df_ <- function(d) {
  d <- as.data.frame(d)
  list(rownames = arr(rownames(d)),
       columns = setNames(lapply(d, function(col) if (is.matrix(col)) mat(col) else arr(col)), names(d)))
}
## postVar / condVar array (k x k x ngroups) -> one k x k matrix per group, named by group
arr3 <- function(a, groups, terms) setNames(lapply(seq_len(dim(a)[3]), function(i) {
  m <- a[, , i, drop = FALSE]; dim(m) <- dim(a)[1:2]; dimnames(m) <- list(terms, terms); mat(m) }), groups)

out <- list()
## run one block: errors are recorded under "error", warnings under "warnings"
block <- function(name, expr) {
  cat("\n\n########################################################################\n")
  cat("## ", name, "\n")
  cat("########################################################################\n")
  warns <- character()
  res <- withCallingHandlers(
    tryCatch(expr, error = function(e) {
      cat("ERROR in block", name, ":", conditionMessage(e), "\n")
      list(error = conditionMessage(e))
    }),
    warning = function(w) {
      cat("Warning:", conditionMessage(w), "\n")
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  if (length(warns)) res$warnings <- arr(unique(warns))
  out[[name]] <<- res
  invisible(res)
}
## one value that may fail on its own without losing the rest of the block
try_val <- function(expr) tryCatch(expr, error = function(e) {
  cat("  (error recorded:", conditionMessage(e), ")\n")
  list(error = conditionMessage(e))
})
show <- function(label, x) { cat("\n--", label, "--\n"); print(x, digits = 10); invisible(x) }

## ---------------------------------------------------------------------------------------------
## Controls
## ---------------------------------------------------------------------------------------------
lctl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
gctl <- glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
lmectl <- lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)
## nlme: the brief's controls (tolerance = 1e-10) fail on the Wong model: "maximum number of
## iterations (maxIter = 500) reached without convergence", with nlminb hitting its default
## evaluation limit (msMaxEval = 200) in the LME steps.  nlme's PNLS/LME alternation does not
## settle below about 1e-7: tolerance 1e-8 stops only after 334 iterations, 1e-10 never.  Used:
## tolerance = 1e-6 (nlme's default; 6 iterations) with msMaxEval = 1e4 and the tight pnlsTol/msTol
## (pnlsTol and msTol change nothing here).  The fits at tolerance 1e-7 and 1e-8 are recorded too
## (nlme_factor_predict$tolerance_sensitivity): fixed effects agree to about 2e-6 relative and
## logLik to 1.5e-4, which bounds how closely any other implementation can be expected to agree.
## nlme still warns in its first iteration (nlminb evaluation limit; "Singular precision matrix in
## level -1, block 23"); the warnings are kept in the JSON and the final fit is unaffected.
nlmectl <- nlmeControl(pnlsTol = 1e-10, msTol = 1e-12, tolerance = 1e-6, maxIter = 500, msMaxIter = 1000,
                       msMaxEval = 1e4)

## ---------------------------------------------------------------------------------------------
## Data: export from the packages if missing, then read back from the CSV files
## ---------------------------------------------------------------------------------------------
ddir <- file.path("tests", "r", "data")
dir.create(ddir, showWarnings = FALSE, recursive = TRUE)
export <- function(name, make) {
  path <- file.path(ddir, paste0(name, ".csv"))
  if (!file.exists(path)) {
    write.csv(make(), path, row.names = FALSE)
    cat("wrote", path, "\n")
  }
  read.csv(path, stringsAsFactors = FALSE)
}
## sleepstudy (lme4): Subject written as its integer-like labels 308..372
sleepstudy <- export("sleepstudy", function() {
  d <- lme4::sleepstudy
  data.frame(Reaction = d$Reaction, Days = d$Days, Subject = as.integer(as.character(d$Subject)))
})
## factor levels: Subject in increasing numeric order (as lme4's own sleepstudy)
sleepstudy$Subject <- factor(sleepstudy$Subject, levels = sort(unique(sleepstudy$Subject)))

## Orthodont (nlme): Subject as character labels "M01".."F11", Sex "Male"/"Female"
Orthodont <- export("Orthodont", function() {
  d <- nlme::Orthodont
  data.frame(distance = d$distance, age = d$age, Subject = as.character(d$Subject), Sex = as.character(d$Sex))
})
## factor levels: Sex in nlme's order Male, Female (so the coefficient is SexFemale);
## Subject sorted as strings F01..F11, M01..M16 (NOT nlme's groupedData order by max distance;
## this only changes the order of ranef rows, not any estimate)
Orthodont$Sex <- factor(Orthodont$Sex, levels = c("Male", "Female"))
Orthodont$Subject <- factor(Orthodont$Subject, levels = sort(unique(Orthodont$Subject), method = "radix"))

## Oats (nlme): Block as roman numerals, Variety as its labels, nitro numeric
Oats <- export("Oats", function() {
  d <- nlme::Oats
  data.frame(Block = as.character(d$Block), Variety = as.character(d$Variety), nitro = d$nitro, yield = d$yield)
})
## factor levels: Block I, II, III, IV, V, VI (NOT nlme's ordered groupedData order VI, V, III, IV,
## II, I; only the order of ranef/coef rows depends on it); Variety alphabetical as in nlme
Oats$Block <- factor(Oats$Block, levels = c("I", "II", "III", "IV", "V", "VI"))
Oats$Variety <- factor(Oats$Variety, levels = c("Golden Rain", "Marvellous", "Victory"))

## cbpp (lme4): herd 1..15 and period 1..4 written as integers
cbpp <- export("cbpp", function() {
  d <- lme4::cbpp
  data.frame(herd = as.integer(as.character(d$herd)), incidence = d$incidence, size = d$size,
             period = as.integer(as.character(d$period)))
})
## factor levels: herd 1..15, period 1..4 in numeric order (as lme4's cbpp)
cbpp$herd <- factor(cbpp$herd, levels = 1:15)
cbpp$period <- factor(cbpp$period, levels = 1:4)

## Machines (nlme), for the three-column KR model: Worker 1..6 as integers, Machine A, B, C
Machines <- export("Machines", function() {
  d <- nlme::Machines
  data.frame(Worker = as.integer(as.character(d$Worker)), Machine = as.character(d$Machine), score = d$score)
})
## factor levels: Worker 1..6 in numeric order (NOT nlme's groupedData order 6, 2, 4, 1, 3, 5)
Machines$Worker <- factor(Machines$Worker, levels = 1:6)
Machines$Machine <- factor(Machines$Machine, levels = c("A", "B", "C"))

## the project's own data (data/*.csv, with a "rownames" column); factor levels as
## mmlib/datasets.py sets them
Blackmore <- read.csv(file.path("data", "Blackmore.csv"), stringsAsFactors = FALSE)
## subject: levels sorted as strings (datasets.py: sorted(values.unique()), same as carData's);
## group: control, patient
Blackmore$subject <- factor(as.character(Blackmore$subject),
                            levels = sort(unique(as.character(Blackmore$subject)), method = "radix"))
Blackmore$group <- factor(Blackmore$group, levels = c("control", "patient"))
Wong <- read.csv(file.path("data", "Wong.csv"), stringsAsFactors = FALSE)
## sex: Female, Male (datasets.py and carData); id stays an integer column (nlme makes the grouping
## factor from it, levels in numeric order)
Wong$sex <- factor(Wong$sex, levels = c("Female", "Male"))

out$meta <- list(
  R.version.string = R.version.string,
  packages = lapply(c(lme4 = "lme4", nlme = "nlme", pbkrtest = "pbkrtest", car = "car",
                      effects = "effects", Matrix = "Matrix", lmerTest = "lmerTest", jsonlite = "jsonlite",
                      carData = "carData", minqa = "minqa"),
                    function(p) tryCatch(format(packageVersion(p)), error = function(e) NA_character_)),
  controls = list(
    lmer = "lmerControl(optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-12, maxfun = 1e5))",
    glmer = "glmerControl(tolPwrss = 1e-12, optimizer = 'bobyqa', optCtrl = list(maxfun = 1e5))",
    lme = "lmeControl(msTol = 1e-12, tolerance = 1e-12, msMaxIter = 1000, maxIter = 1000, niterEM = 100)",
    nlme = "nlmeControl(pnlsTol = 1e-10, msTol = 1e-12, tolerance = 1e-6, maxIter = 500, msMaxIter = 1000, msMaxEval = 1e4)"),
  number_format = "%.17g; null = NA/NaN/Inf",
  data = list(sleepstudy = "tests/r/data/sleepstudy.csv", Orthodont = "tests/r/data/Orthodont.csv",
              Oats = "tests/r/data/Oats.csv", cbpp = "tests/r/data/cbpp.csv",
              Machines = "tests/r/data/Machines.csv", Blackmore = "data/Blackmore.csv", Wong = "data/Wong.csv"),
  factor_levels = list(
    sleepstudy.Subject = arr(levels(sleepstudy$Subject)),
    Orthodont.Sex = arr(levels(Orthodont$Sex)), Orthodont.Subject = arr(levels(Orthodont$Subject)),
    Oats.Block = arr(levels(Oats$Block)), Oats.Variety = arr(levels(Oats$Variety)),
    cbpp.herd = arr(levels(cbpp$herd)), cbpp.period = arr(levels(cbpp$period)),
    Machines.Worker = arr(levels(Machines$Worker)), Machines.Machine = arr(levels(Machines$Machine)),
    Blackmore.group = arr(levels(Blackmore$group)), Wong.sex = arr(levels(Wong$sex)))
)
print(out$meta[c("R.version.string", "packages")])

## ---------------------------------------------------------------------------------------------
## Kenward-Roger records shared by the kr_* blocks
## ---------------------------------------------------------------------------------------------
## the optimum check: |REML criterion at bobyqa's theta - after an nlminb polish|
polish <- function(fm) {
  dfun <- update(fm, devFunOnly = TRUE)
  th <- getME(fm, "theta")
  o <- nlminb(th, dfun, lower = getME(fm, "lower"),
              control = list(rel.tol = 1e-15, x.tol = 1e-14, eval.max = 1e5, iter.max = 1e5))
  list(REMLcrit_bobyqa = dfun(th), REMLcrit_nlminb = o$objective,
       max_abs_theta_change = max(abs(o$par - th)))
}
kr_test <- function(fm, L) {
  kr <- KRmodcomp(fm, L)
  show("KRmodcomp", kr)
  t <- kr$test
  rows <- setNames(lapply(rownames(t), function(r) named(unlist(t[r, ]))), rownames(t))
  c(list(L = mat(L)), rows)
}
anova_F <- function(fm) {
  a <- car::Anova(fm, test = "F")
  show("car::Anova(fm, test = 'F')", a)
  df_(a)
}
kr_records <- function(fm, L = NULL) {
  show("summary", summary(fm))
  show("theta", getME(fm, "theta"))
  vadj <- vcovAdj(fm)
  show("vcovAdj(fm)", as.matrix(vadj))
  res <- list(
    formula = paste(deparse(formula(fm)), collapse = " "),
    REML = isREML(fm),
    singular = isSingular(fm),
    optimum_check = polish(fm),
    fixef = named(fixef(fm)),
    vcov = mat(as.matrix(vcov(fm))),
    theta = named(getME(fm, "theta")),
    sigma = sigma(fm),
    REMLcrit = REMLcrit(fm),
    varcorr = df_(as.data.frame(VarCorr(fm))),
    anova_F = try_val(anova_F(fm)),
    vcovAdj = mat(as.matrix(vadj))
  )
  if (!is.null(L)) res$KRmodcomp <- try_val(kr_test(fm, L))
  res
}

## ---------------------------------------------------------------------------------------------
## kr_sleepstudy -- KR with a vector-valued (2-column) random term: fixef, vcov, theta, sigma,
## REML criterion, car::Anova(test = "F") (KR F tests), KRmodcomp for Days, vcovAdj (Phi_A).
## ---------------------------------------------------------------------------------------------
block("kr_sleepstudy", {
  fm <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, control = lctl)
  kr_records(fm, L = matrix(c(0, 1), nrow = 1, dimnames = list(NULL, names(fixef(fm)))))
})

## ---------------------------------------------------------------------------------------------
## kr_orthodont -- KR with a 2-column random term and an interaction; type II Anova rows age, Sex,
## age:Sex; KRmodcomp for SexFemale alone.
## ---------------------------------------------------------------------------------------------
block("kr_orthodont", {
  fm <- lmer(distance ~ age * Sex + (age | Subject), Orthodont, control = lctl)
  L <- matrix(as.numeric(names(fixef(fm)) == "SexFemale"), nrow = 1, dimnames = list(NULL, names(fixef(fm))))
  c(list(KR_coefficient = "SexFemale"), kr_records(fm, L))
})

## ---------------------------------------------------------------------------------------------
## kr_three_col -- KR with a three-column random term.  The suggested Orthodont model
## distance ~ age + Sex + (age + I(age^2) | Subject) converges only to a singular fit (correlation
## -1, last theta 0), where the reference would depend on the optimiser (recorded anyway in
## kr_three_col_orthodont_singular).  The main three-column case is Machines (nlme):
## score ~ Machine + (Machine | Worker), non-singular (theta diagonal about 4.24, 5.35, 2.91);
## its Anova row Machine is a 2-df KR F test, and KRmodcomp tests MachineB = MachineC = 0.
## ---------------------------------------------------------------------------------------------
block("kr_three_col", {
  fm <- lmer(score ~ Machine + (Machine | Worker), Machines, control = lctl)
  L <- rbind(c(0, 1, 0), c(0, 0, 1)); colnames(L) <- names(fixef(fm))
  c(list(data = "Machines (tests/r/data/Machines.csv)"), kr_records(fm, L))
})
block("kr_three_col_orthodont_singular", {
  fm <- lmer(distance ~ age + Sex + (age + I(age^2) | Subject), Orthodont, control = lctl)
  L <- matrix(as.numeric(names(fixef(fm)) == "SexFemale"), nrow = 1, dimnames = list(NULL, names(fixef(fm))))
  c(list(note = "singular fit (boundary): values sensitive to the optimiser; use with care"),
    kr_records(fm, L))
})

## ---------------------------------------------------------------------------------------------
## kr_one_col -- random-intercept control case for KR: Anova(test = "F") and vcovAdj.
## ---------------------------------------------------------------------------------------------
block("kr_one_col", {
  fm <- lmer(distance ~ age + Sex + (1 | Subject), Orthodont, control = lctl)
  L <- matrix(as.numeric(names(fixef(fm)) == "SexFemale"), nrow = 1, dimnames = list(NULL, names(fixef(fm))))
  c(list(KR_coefficient = "SexFemale"), kr_records(fm, L))
})

## ---------------------------------------------------------------------------------------------
## nested_lme -- fitted/resid at nested levels (0 = fixed, 1 = Block, 2 = Variety within Block),
## ranef and coef per level, and predict with unseen groups (nlme returns NA for them).
## ---------------------------------------------------------------------------------------------
oats_new <- data.frame(
  Block = c("I", "II", "III", "VII"),
  Variety = c("Victory", "Marvellous", "NewVariety", "Victory"),
  nitro = c(0.2, 0.4, 0.6, 0.0),
  stringsAsFactors = FALSE)
## Row 3: every Variety occurs in every Block of Oats (a full 6 x 3 x 4 layout), so the
## "existing Block, Variety not seen in it" row uses a new Variety label in Block III.
## Row 4: a new Block VII.
block("nested_lme", {
  fm <- lme(yield ~ nitro, data = Oats, random = ~ 1 | Block/Variety, control = lmectl)
  show("summary", summary(fm))
  show("VarCorr", VarCorr(fm))
  re_sd <- sapply(as.matrix(fm$modelStruct$reStruct), function(m) sqrt(m[1, 1])) * fm$sigma
  show("random-effect SDs", re_sd)
  fit <- fitted(fm, level = 0:2)
  res <- resid(fm, level = 0:2)
  show("fitted(level = 0:2), head", head(fit))
  re <- ranef(fm)
  show("ranef", re)
  c1 <- coef(fm, level = 1); c2 <- coef(fm, level = 2)
  show("coef(level = 1)", c1)
  show("coef(level = 2), head", head(c2))
  ## newdata with character columns (as read from a CSV) ...
  p_chr <- try_val(predict(fm, oats_new, level = 0:2))
  show("predict(newdata, level = 0:2)", p_chr)
  ## ... and with factor columns (levels including the new labels)
  nd_f <- oats_new
  nd_f$Block <- factor(nd_f$Block, levels = c(levels(Oats$Block), "VII"))
  nd_f$Variety <- factor(nd_f$Variety, levels = c(levels(Oats$Variety), "NewVariety"))
  p_fac <- try_val(predict(fm, nd_f, level = 0:2))
  list(
    method = fm$method,
    fixef = named(fixef(fm)),
    random_effect_sd = named(re_sd),
    sigma = fm$sigma,
    logLik = as.numeric(logLik(fm)),
    REML_logLik_df = attr(logLik(fm), "df"),
    fitted = df_(fit),
    resid = df_(res),
    resid_pearson = arr(unname(resid(fm, type = "pearson"))),
    resid_normalized = arr(unname(resid(fm, type = "normalized"))),
    ranef = list(Block = df_(re$Block), Variety = df_(re$Variety)),
    coef_level1 = df_(c1),
    coef_level2 = df_(c2),
    newdata = df_(oats_new),
    predict_newdata_character = if (is.data.frame(p_chr)) df_(p_chr) else p_chr,
    predict_newdata_factor = if (is.data.frame(p_fac)) df_(p_fac) else p_fac
  )
})

## ---------------------------------------------------------------------------------------------
## nested_lmer -- the same model in lme4: fitted, resid, conditional variances of the random
## effects per factor, predict with re.form = NULL / ~(1 | Block) / NA, and new levels.
## ---------------------------------------------------------------------------------------------
block("nested_lmer", {
  fm <- lmer(yield ~ nitro + (1 | Block/Variety), Oats, control = lctl)
  show("summary", summary(fm))
  re <- ranef(fm, condVar = TRUE)
  show("ranef", re)
  nd_all <- oats_new
  nd_old <- oats_new[1:2, ]
  rec_re <- lapply(names(re), function(g) {
    pv <- attr(re[[g]], "postVar")
    list(values = df_(re[[g]]), postVar = arr(as.vector(pv)), postVar_dim = arr(dim(pv)))
  })
  names(rec_re) <- names(re)
  pred <- function(...) try_val({ v <- predict(fm, ...); arr(unname(v)) })
  p <- list(
    newdata_seen_rows = "rows 1-2 of newdata (existing Block and Variety:Block)",
    re_form_NULL_seen = pred(nd_old, re.form = NULL),
    re_form_Block_seen = pred(nd_old, re.form = ~ (1 | Block)),
    re_form_NA_seen = pred(nd_old, re.form = NA),
    re_form_NULL_all = pred(nd_all, re.form = NULL),  # an error: new levels
    re_form_NA_all = pred(nd_all, re.form = NA),
    re_form_NULL_all_allow_new = pred(nd_all, re.form = NULL, allow.new.levels = TRUE),
    re_form_Block_all_allow_new = pred(nd_all, re.form = ~ (1 | Block), allow.new.levels = TRUE)
  )
  show("predictions", p)
  list(
    fixef = named(fixef(fm)),
    theta = named(getME(fm, "theta")),
    sigma = sigma(fm),
    REMLcrit = REMLcrit(fm),
    varcorr = df_(as.data.frame(VarCorr(fm))),
    fitted = arr(unname(fitted(fm))),
    resid = arr(unname(resid(fm))),
    ranef = rec_re,
    newdata = df_(nd_all),
    predict = p
  )
})

## ---------------------------------------------------------------------------------------------
## nlme_factor_predict -- nlme predict with a factor covariate (sex) in a fixed-effect submodel,
## at levels 0 and 1, for several rows and for a single row (where a one-level factor in newdata
## must still be coded with the fit's contrasts); also the group-id dtype (integer / character).
## ---------------------------------------------------------------------------------------------
block("nlme_factor_predict", {
  cat("levels(Wong$sex):", levels(Wong$sex), "\n")
  fit <- nlme(piq ~ theta1 + theta2 * exp(-theta3 * days), data = Wong,
              fixed = list(theta1 ~ sex, theta2 ~ 1, theta3 ~ 1),
              random = theta1 + theta2 ~ 1 | id,
              start = c(95, 0, -10, 0.01), method = "ML", control = nlmectl)
  show("summary", summary(fit))
  female_id <- Wong$id[Wong$sex == "Female"][1]
  nd <- data.frame(id = c(3358L, 3358L, female_id, female_id), days = c(30, 300, 30, 300),
                   sex = factor(c("Male", "Male", "Female", "Female"), levels = levels(Wong$sex)))
  p <- predict(fit, nd, level = 0:1)
  show("predict(nd, level = 0:1)", p)
  nd_chr <- nd; nd_chr$id <- as.character(nd_chr$id); nd_chr$sex <- as.character(nd_chr$sex)
  p_chr <- try_val(predict(fit, nd_chr, level = 0:1))
  show("predict, id and sex as character", p_chr)
  one <- nd[1, ]
  one_f0 <- try_val(unname(predict(fit, one, level = 0)))
  one_f1 <- try_val(unname(predict(fit, one, level = 1)))
  one_chr <- data.frame(id = "3358", days = 30, sex = "Male", stringsAsFactors = FALSE)
  one_c0 <- try_val(unname(predict(fit, one_chr, level = 0)))
  one_c1 <- try_val(unname(predict(fit, one_chr, level = 1)))
  show("one row, factor sex: level 0, level 1", list(one_f0, one_f1))
  show("one row, character sex: level 0, level 1", list(one_c0, one_c1))
  vc <- VarCorr(fit)
  show("VarCorr", vc)
  re <- ranef(fit)
  ## the same model at tighter tolerances (see the comment at nlmectl)
  sens <- lapply(c(tol_1e_7 = 1e-7, tol_1e_8 = 1e-8), function(tol) try_val({
    f <- update(fit, control = nlmeControl(pnlsTol = 1e-10, msTol = 1e-12, tolerance = tol, maxIter = 500,
                                           msMaxIter = 1000, msMaxEval = 1e4))
    list(tolerance = tol, iterations = f$numIter, fixef = named(fixef(f)), logLik = as.numeric(logLik(f)),
         predict_level_0_1 = df_(predict(f, nd, level = 0:1)))
  }))
  show("tolerance sensitivity", sens)
  list(
    control = "nlmeControl(pnlsTol = 1e-10, msTol = 1e-12, tolerance = 1e-6, maxIter = 500, msMaxIter = 1000, msMaxEval = 1e4)",
    iterations = fit$numIter,
    start = arr(c(95, 0, -10, 0.01)),
    sex_levels = arr(levels(Wong$sex)),
    method = "ML",
    fixef = named(fixef(fit)),
    logLik = as.numeric(logLik(fit)),
    sigma = fit$sigma,
    random_effects_cov = mat(as.matrix(fit$modelStruct$reStruct[[1]]) * fit$sigma^2),
    ranef_id = df_(re),  # level-1 predictions = fixed part with theta1, theta2 + these
    female_id = female_id,
    newdata = df_(nd),
    predict_level_0_1 = df_(p),
    predict_level_0_1_character_id_sex = if (is.data.frame(p_chr)) df_(p_chr) else p_chr,
    one_row = df_(one),
    one_row_level0 = one_f0,
    one_row_level1 = one_f1,
    one_row_character_sex_level0 = one_c0,
    one_row_character_sex_level1 = one_c1,
    tolerance_sensitivity = sens
  )
})

## ---------------------------------------------------------------------------------------------
## lmer_residuals -- lmer Pearson / response / scaled residuals, fitted, accessors (deviance,
## REMLcrit, df.residual, logLik), conditional variances (postVar, 2 x 2 per subject), coef, and
## predict with an integer group id in newdata.
## ---------------------------------------------------------------------------------------------
block("lmer_residuals", {
  fm <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, control = lctl)
  re <- ranef(fm, condVar = TRUE)
  pv <- attr(re$Subject, "postVar")
  show("postVar[, , 1:2]", pv[, , 1:2])
  nd_int <- data.frame(Days = c(0, 5), Subject = c(308, 309))
  nd_chr <- data.frame(Days = c(0, 5), Subject = c("308", "309"))
  cf <- coef(fm)$Subject
  show("coef(fm)$Subject", cf)
  ll <- logLik(fm)
  list(
    fixef = named(fixef(fm)),
    theta = named(getME(fm, "theta")),
    sigma = sigma(fm),
    resid_pearson = arr(unname(resid(fm, type = "pearson"))),
    resid_response = arr(unname(resid(fm, type = "response"))),
    resid_scaled = arr(unname(resid(fm, scaled = TRUE))),
    fitted = arr(unname(fitted(fm))),
    deviance = try_val(deviance(fm)),
    deviance_REML_FALSE = try_val(deviance(fm, REML = FALSE)),
    REMLcrit = REMLcrit(fm),
    df_residual = df.residual(fm),
    logLik = as.numeric(ll),
    logLik_df = attr(ll, "df"),
    logLik_nobs = attr(ll, "nobs"),
    ranef = df_(re$Subject),
    postVar = arr3(pv, rownames(re$Subject), colnames(re$Subject)),
    coef_Subject = df_(cf),
    predict_newdata = df_(nd_int),
    predict_integer_Subject = try_val(arr(unname(predict(fm, newdata = nd_int)))),
    predict_character_Subject = try_val(arr(unname(predict(fm, newdata = nd_chr))))
  )
})

## ---------------------------------------------------------------------------------------------
## glmer_condvar -- binomial GLMM: conditional variances (postVar), residuals of each type,
## fitted, deviance, df.residual, predict on link and response scales.
## ---------------------------------------------------------------------------------------------
block("glmer_condvar", {
  gm <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, family = binomial,
              control = gctl)
  show("summary", summary(gm))
  re <- ranef(gm, condVar = TRUE)
  pv <- attr(re$herd, "postVar")
  ll <- logLik(gm)
  list(
    fixef = named(fixef(gm)),
    theta = named(getME(gm, "theta")),
    logLik = as.numeric(ll),
    logLik_df = attr(ll, "df"),
    ranef = df_(re$herd),
    postVar = arr(as.vector(pv)),
    resid_pearson = arr(unname(resid(gm, type = "pearson"))),
    resid_deviance = arr(unname(resid(gm, type = "deviance"))),
    resid_response = arr(unname(resid(gm, type = "response"))),
    fitted = arr(unname(fitted(gm))),
    deviance = deviance(gm),
    df_residual = df.residual(gm),
    predict_link = arr(unname(predict(gm, type = "link"))),
    predict_response = arr(unname(predict(gm, type = "response")))
  )
})

## ---------------------------------------------------------------------------------------------
## effects_gaussian -- effects' default focal values (nice(seq(min, max, length.out = 5))) and its
## confidence limits for Gaussian mixed models: the critical value used is recorded as
## (upper - fit) / se, next to qt(0.975, n - p) and qnorm(0.975).
## ---------------------------------------------------------------------------------------------
eff_rec <- function(e) {
  d <- as.data.frame(e)
  show(paste("Effect", paste(names(e$variables), collapse = "*")), d)
  list(focal = lapply(e$variables, function(v) arr(v$levels)),
       table = df_(d),
       critical_value = arr(unname((e$upper - e$fit) / e$se)),
       confidence_level = if (!is.null(e$confidence.level)) e$confidence.level else NA)
}
block("effects_gaussian", {
  fm <- lmer(yield ~ nitro * Variety + (1 | Block), Oats, control = lctl)
  fm_lme <- lme(yield ~ nitro + Variety, data = Oats, random = ~ 1 | Block/Variety, control = lmectl)
  fm_sleep <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy, control = lctl)
  fm_orth <- lmer(distance ~ age * Sex + (age | Subject), Orthodont, control = lctl)
  n <- nrow(Oats); p <- length(fixef(fm))
  n2 <- nrow(Oats); p2 <- length(fixef(fm_lme))
  list(
    lmer_nitro_x_Variety = list(
      formula = "lmer(yield ~ nitro * Variety + (1 | Block), Oats)",
      fixef = named(fixef(fm)), n = n, p = p,
      qt_0.975_n_minus_p = qt(0.975, n - p), qnorm_0.975 = qnorm(0.975),
      Effect_nitro = try_val(eff_rec(Effect("nitro", fm))),
      Effect_nitro_Variety_xlevels4 = try_val(eff_rec(Effect(c("nitro", "Variety"), fm, xlevels = list(nitro = 4))))
    ),
    lme_nitro_plus_Variety = list(
      formula = "lme(yield ~ nitro + Variety, random = ~ 1 | Block/Variety, Oats)",
      fixef = named(fixef(fm_lme)), n = n2, p = p2,
      qt_0.975_n_minus_p = qt(0.975, n2 - p2), qnorm_0.975 = qnorm(0.975),
      Effect_nitro = try_val(eff_rec(Effect("nitro", fm_lme))),
      Effect_nitro_Variety_xlevels4 = try_val(eff_rec(Effect(c("nitro", "Variety"), fm_lme, xlevels = list(nitro = 4))))
    ),
    sleepstudy_Days = list(
      n = nrow(sleepstudy), p = 2, qt_0.975_n_minus_p = qt(0.975, nrow(sleepstudy) - 2),
      Effect_Days = try_val(eff_rec(Effect("Days", fm_sleep)))),
    orthodont_age = list(
      n = nrow(Orthodont), p = 4, qt_0.975_n_minus_p = qt(0.975, nrow(Orthodont) - 4),
      Effect_age = try_val(eff_rec(Effect("age", fm_orth)))),
    ## effects:::nice on the default 5-point grids, and on a few others
    nice = list(
      Days_0_9 = arr(effects:::nice(seq(0, 9, length.out = 5))),
      age_8_14 = arr(effects:::nice(seq(8, 14, length.out = 5))),
      nitro_0_0.6_len5 = arr(effects:::nice(seq(0, 0.6, length.out = 5))),
      nitro_0_0.6_len4 = arr(effects:::nice(seq(0, 0.6, length.out = 4))),
      Blackmore_age_8_17.92 = arr(effects:::nice(seq(8, 17.92, length.out = 5))),
      x_1.3_987.6 = arr(effects:::nice(seq(1.3, 987.6, length.out = 5))),
      x_minus3.7_2.2 = arr(effects:::nice(seq(-3.7, 2.2, length.out = 5)))
    )
  )
})

## ---------------------------------------------------------------------------------------------
## lmlist_exact -- nlme::lmList where one group (Subject 308, Days 0 and 1 only) has exactly as
## many rows as coefficients: its residual df is 0.  In nlme 3.1-162 intervals() with the pooled SD
## (the default) still gives NaN limits for Subject 308 (its lm's unscaled covariance is NaN), and
## intervals(pool = FALSE) fails with "Non-numeric argument to mathematical function" (recorded as
## the error); pooledSD gives sigma on 136 df.
## ---------------------------------------------------------------------------------------------
block("lmlist_exact", {
  d <- sleepstudy[sleepstudy$Subject != "308" | sleepstudy$Days %in% c(0, 1), ]
  cat("rows:", nrow(d), "; rows of Subject 308:", sum(d$Subject == "308"), "\n")
  fl <- lmList(Reaction ~ Days | Subject, data = d)
  show("coef", coef(fl))
  iv <- intervals(fl)
  show("intervals (pooled)", iv)
  iv_np <- try_val(intervals(fl, pool = FALSE))
  show("intervals (pool = FALSE)", iv_np)
  psd <- pooledSD(fl)
  show("pooledSD", psd)
  iv_rec <- function(iv) {
    if (!is.array(iv)) return(iv)
    setNames(lapply(dimnames(iv)[[3]], function(k) mat(iv[, , k])), dimnames(iv)[[3]])
  }
  list(
    rows_per_subject = named(table(d$Subject)),
    coef = df_(coef(fl)),
    intervals_pooled = iv_rec(iv),
    intervals_not_pooled = iv_rec(iv_np),
    pooled_sigma = as.numeric(psd),
    pooled_sigma_df = attr(psd, "df"),
    residual_sd_per_group = named(sapply(fl, function(m) if (is.null(m)) NA else summary(m)$sigma))
  )
})

## ---------------------------------------------------------------------------------------------
## lme_normalized -- normalized residuals under a corCAR1 within-subject correlation, with
## Pearson and response residuals and fitted at levels 0 and 1.
## ---------------------------------------------------------------------------------------------
block("lme_normalized", {
  B <- Blackmore
  B$log.exercise <- log2(B$exercise + 5/60)
  fm <- lme(log.exercise ~ I(age - 8) * group, random = ~ 1 | subject,
            correlation = corCAR1(form = ~ age | subject), data = B, control = lmectl)
  show("summary", summary(fm))
  phi <- coef(fm$modelStruct$corStruct, unconstrained = FALSE)
  list(
    method = fm$method,
    fixef = named(fixef(fm)),
    sigma = fm$sigma,
    random_intercept_sd = sqrt(as.matrix(fm$modelStruct$reStruct[[1]])[1, 1]) * fm$sigma,
    corCAR1_Phi = unname(phi),
    logLik = as.numeric(logLik(fm)),
    resid_normalized = arr(unname(resid(fm, type = "normalized"))),
    ## nlme 3.1-162 misaligns normalized residuals when the rows are not sorted by group: the
    ## file lists subjects "207a", "207b", ... after "3xx". The same model fitted to the rows
    ## sorted by subject (the same estimates) gives the residuals of the whitened model, here put
    ## back in the file's order; resid_normalized above differs from them from row 418 on.
    resid_normalized_sorted_data = local({
      o <- order(B$subject)
      fs <- update(fm, data = B[o, ])
      arr(unname(resid(fs, type = "normalized"))[order(o)])
    }),
    resid_pearson = arr(unname(resid(fm, type = "pearson"))),
    resid_response = arr(unname(resid(fm, type = "response"))),
    fitted = df_(fitted(fm, level = 0:1))
  )
})

## ---------------------------------------------------------------------------------------------
## write the JSON (and check that it parses and keeps full precision)
## ---------------------------------------------------------------------------------------------
json_path <- file.path("tests", "r", "issue12_reference.json")
writeLines(to_json(out), json_path, useBytes = TRUE)
back <- jsonlite::fromJSON(json_path, simplifyVector = FALSE)
stopifnot(identical(as.numeric(back$kr_sleepstudy$sigma), out$kr_sleepstudy$sigma))
cat("\nwrote", json_path, "\n")
print(sessionInfo())
