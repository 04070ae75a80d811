## R reference battery of model matrices: how R evaluates its formula language, for
## mmlib's design matrices to be tested against.
## Run from the repository root:
##   Rscript tests/r/formulas.R > tests/r/formulas.txt 2>&1
## It writes
##   tests/r/data/formula_sim.csv  40 simulated rows (set.seed fixed), the training data
##   tests/r/data/formula_new.csv  5 rows of new data for predict()
##   tests/r/formulas.json         the reference (layout below)
##   stdout                        a readable log (kept as tests/r/formulas.txt)
## Only base R (stats, splines) and jsonlite are used. Run with R 4.2.2 Patched (2022-11-10 r83330),
## jsonlite 1.8.4; the JSON is written by hand below (jsonlite writes at most 15 digits).
##
## What the battery shows that one might not guess (exact column names from R):
##  - a logical variable gets its level appended: flagTRUE, I(day > 2)TRUE, I(a == "a2")TRUE,
##    factor(k > 3)TRUE; matrix-valued terms get 1, 2, ...: poly(x, 2)1, ns(x, df = 3)1,
##    bs(x, df = 4)1, poly(x, 2, raw = TRUE)1; scale(x) is one column named scale(x)
##  - names come from R's deparse, not from the text: I(x*z) -> I(x * z), log( x+1 ) -> log(x + 1),
##    I(x ** 2) -> I(x^2), poly(x,2) -> poly(x, 2)1, and %% / %/% lose their spaces:
##    I(day%%3), I(day%/%3), ordered(day%%3).L
##  - x^2 and a^2 at the formula level are just x and a; (x + z)^2 is x + z + x:z; x^0.5 and
##    (a + x)^0 are errors ("invalid power in formula")
##  - x %in% a is the term x:a (columns x:aa1, x:aa2, x:aa3); a/x is a + a:x (aa1:x ...)
##  - a factor is coded by indicators (all levels) where its margin is missing: ~ a:b gives the
##    intercept and all 6 indicator products (rank 6 of 7); ~ a + b:a labels the term a:b (columns
##    aa1:bhi ...); ~ b:a keeps b first (blo:aa1, bhi:aa1, ...); an ordered factor coded by
##    indicators gets level names, not .L/.Q: b:ordered(day %% 3) -> blo:ordered(day%%3)0
##  - terms are sorted by order: ~ x:a + b gives bhi before x:aa1
##  - poly() values of tied inputs can differ in the last bits (QR), so compare with a tolerance
##
## Both CSVs are written, then READ BACK, and every reference below is computed on the data as
## read from the CSV (so the reference corresponds exactly to the committed files). After
## reading, the factor columns are set explicitly:
##   a: factor, levels a1, a2, a3
##   b: factor, levels lo, hi          (NOT alphabetical: "lo" is the reference level)
##   c: left a character vector, so R's default rules make it a factor with sorted levels p, q, r
##   flag: read.csv reads TRUE/FALSE as logical; k, day, succ, fail, size are integer
## The project data sets (data/*.csv) are read with read.csv and typed as R has them:
##   Blackmore:      group factor (control, patient); subject left character (not used)
##   Wong:           sex factor (Female, Male)
##   KosteckiDillon: medication factor (none, reduced, continuing), hatype (Aura, Mixed, No Aura),
##                   headache (no, yes), sex (female, male)
## The CSV column "rownames" is dropped.
##
## formulas.json:
##   meta:      R version, package versions, options, how the large data sets are sampled
##   data_new:  for each real data set, the new data (5 rows) used for its predictions
##              (the simulated new data is tests/r/data/formula_new.csv)
##   formulas:  one object per formula:
##     id, data, formula       the formula text exactly as written here (parsed by R)
##     term_labels, order, intercept   attributes of terms(formula)
##     colnames, assign        of model.matrix(formula, data) (default contrasts:
##                             contr.treatment, contr.poly for ordered factors)
##     contrasts               attr(model.matrix, "contrasts")
##     data_classes            attr(terms(model.frame), "dataClasses")
##     predvars                deparse of attr(terms(model.frame), "predvars") with 17 digits
##                             (what safe prediction re-evaluates on new data)
##     nrow                    rows of the model matrix
##     matrix                  row-major; for data sets over 60 rows only the rows listed in
##                             "rows" (1-based: the first 10 and 5 fixed indices), with
##                             "colsums" over all rows
##     response                model.response(model.frame) when there is a left-hand side
##                             (matrix rows for cbind(); same row sampling as "matrix")
##     offset                  model.offset(model.frame), when not NULL (same row sampling)
##     fit                     the R call fitted for the predictions: lm(formula, data) or, for a
##                             cbind() or factor response, glm(..., family = binomial); a
##                             one-sided formula gets the data set's default response (meta)
##     coef_names, coef        coefficients of that fit (null = aliased, NA in R)
##     matrix_new              the model matrix predict() builds for the new data
##                             (model.frame with the fit's xlevels, predvars from the fit)
##     predict_new             predict(fit, newdata) (glm: type "link"), or predict_error
##     warnings                warnings raised while evaluating the entry
##   errors:    what R says for inputs it refuses or warns on: the call, error message,
##              warnings and a summary of any value (NaN written as "NaN", NA as "NA")
## Numbers are written with 17 significant digits (exact round trip to IEEE doubles).

suppressPackageStartupMessages({
  library(stats)
  library(splines)
  library(jsonlite)
})
Sys.setenv(LANGUAGE = "en")                 # untranslated messages
invisible(Sys.setlocale("LC_COLLATE", "C")) # sorting of character levels independent of locale
options(contrasts = c(unordered = "contr.treatment", ordered = "contr.poly"),
        na.action = "na.omit", stringsAsFactors = FALSE, width = 120, warn = 1)

dir.create("tests/r/data", showWarnings = FALSE, recursive = TRUE)
sim_csv <- "tests/r/data/formula_sim.csv"
new_csv <- "tests/r/data/formula_new.csv"
json_out <- "tests/r/formulas.json"

## ---------------------------------------------------------------------------------------------
## Simulated data (written, then read back)
set.seed(20240611)
n <- 40L
size <- sample(5:15, n, replace = TRUE)
sim0 <- data.frame(
  y = round(rnorm(n, 5, 2), 3),
  x = round(runif(n, 0.5, 3), 3),
  z = round(runif(n, 0.5, 3), 3),
  k = rbinom(n, 10L, 0.4),                                   # integer counts 0..10
  day = sample(rep(0:9, 4L)),                                # integer 0..9, each 4 times
  a = sample(rep(c("a1", "a2", "a3"), length.out = n)),
  b = sample(rep(c("lo", "hi"), length.out = n)),
  c = sample(rep(c("p", "q", "r"), length.out = n)),
  flag = sample(rep(c(TRUE, FALSE), length.out = n)),
  succ = rbinom(n, size, 0.4),
  fail = 1L + rbinom(n, 6L, 0.5),
  size = size,
  w = round(runif(n, 0.5, 2), 3),
  off = round(runif(n, 1, 4), 3)
)
## New data: values inside the training ranges; b takes only "hi" and c only "p" and "r"
## (so b keeps its level "lo" by the explicit levels, and c's levels come from the fit's xlevels).
new0 <- data.frame(
  y = c(4.5, 5.5, 6, 3.5, 5),
  x = c(0.8, 1.25, 1.9, 2.4, 2.85),
  z = c(2.7, 1.1, 1.6, 0.9, 2.2),
  k = c(1L, 3L, 4L, 6L, 2L),
  day = c(0L, 3L, 5L, 9L, 2L),
  a = c("a1", "a3", "a2", "a3", "a1"),
  b = c("hi", "hi", "hi", "hi", "hi"),
  c = c("r", "p", "r", "p", "r"),
  flag = c(TRUE, FALSE, FALSE, TRUE, TRUE),
  succ = c(2L, 5L, 0L, 3L, 4L),
  fail = c(3L, 1L, 4L, 2L, 5L),
  size = c(6L, 9L, 5L, 12L, 10L),
  w = c(1, 0.75, 1.5, 1.2, 0.6),
  off = c(1.5, 2.25, 3, 3.75, 2)
)
write.csv(sim0, sim_csv, row.names = FALSE)
write.csv(new0, new_csv, row.names = FALSE)

read_sim <- function(path) {
  d <- read.csv(path, stringsAsFactors = FALSE)
  d$a <- factor(d$a, levels = c("a1", "a2", "a3"))
  d$b <- factor(d$b, levels = c("lo", "hi"))
  stopifnot(is.character(d$c), is.logical(d$flag),
            is.integer(d$k), is.integer(d$day), is.integer(d$succ), is.integer(d$fail),
            is.integer(d$size), is.double(d$x), is.double(d$z), is.double(d$y))
  d
}
sim <- read_sim(sim_csv)
new <- read_sim(new_csv)
stopifnot(nrow(sim) == n, all(sim$size >= sim$succ), all(sim$x > 0), all(sim$z > 0),
          all(sim$w > 0), all(sim$off > 0), all(sim$k >= 0 & sim$k <= 10),
          setequal(sim$day, 0:9), all(table(sim$a) > 0), all(table(sim$b) > 0),
          setequal(sim$c, c("p", "q", "r")), any(sim$flag), any(!sim$flag),
          all(sim$y > -10))
for (v in c("x", "z", "k", "y", "w", "off"))   # new data inside the training ranges
  stopifnot(all(new[[v]] >= min(sim[[v]]) & new[[v]] <= max(sim[[v]])))
stopifnot(all(sim[, c("x", "z", "y", "w", "off")] == sim0[, c("x", "z", "y", "w", "off")]))

## ---------------------------------------------------------------------------------------------
## The project's data sets
read_project <- function(name) {
  d <- read.csv(file.path("data", paste0(name, ".csv")), stringsAsFactors = FALSE)
  d$rownames <- NULL
  d
}
Blackmore <- read_project("Blackmore")
Blackmore$group <- factor(Blackmore$group, levels = c("control", "patient"))
Wong <- read_project("Wong")
Wong$sex <- factor(Wong$sex, levels = c("Female", "Male"))
KosteckiDillon <- read_project("KosteckiDillon")
KosteckiDillon$medication <- factor(KosteckiDillon$medication,
                                    levels = c("none", "reduced", "continuing"))
KosteckiDillon$hatype <- factor(KosteckiDillon$hatype, levels = c("Aura", "Mixed", "No Aura"))
KosteckiDillon$headache <- factor(KosteckiDillon$headache, levels = c("no", "yes"))
KosteckiDillon$sex <- factor(KosteckiDillon$sex, levels = c("female", "male"))
stopifnot(!anyNA(Blackmore$group), !anyNA(Wong$sex), !anyNA(KosteckiDillon$medication),
          !anyNA(KosteckiDillon$hatype), !anyNA(KosteckiDillon$headache),
          !anyNA(KosteckiDillon$sex), nrow(Blackmore) == 945L, nrow(Wong) == 331L,
          nrow(KosteckiDillon) == 4152L)

## New data for the project data sets (inside the observed ranges; stored in formulas.json)
Blackmore_new <- data.frame(
  age = c(8, 10, 11.5, 14, 16),
  exercise = c(1, 2, 3, 4, 5),
  group = factor(c("patient", "control", "control", "patient", "patient"),
                 levels = c("control", "patient")))
Wong_new <- data.frame(
  days = c(30L, 100L, 365L, 1000L, 20L),
  duration = c(1L, 5L, 10L, 20L, 40L),
  sex = factor(c("Male", "Female", "Male", "Male", "Female"), levels = c("Female", "Male")),
  age = c(20, 30, 40, 50, 25),
  piq = c(90L, 95L, 100L, 85L, 110L),
  viq = c(90L, 95L, 100L, 85L, 110L))
KosteckiDillon_new <- data.frame(
  time = c(-10L, -1L, 0L, 5L, 20L),
  dos = c(100L, 500L, 753L, 1000L, 1200L),
  medication = factor(c("none", "reduced", "continuing", "reduced", "none"),
                      levels = c("none", "reduced", "continuing")),
  hatype = factor(c("Aura", "Mixed", "No Aura", "Aura", "Aura"),
                  levels = c("Aura", "Mixed", "No Aura")),
  sex = factor(c("female", "male", "female", "female", "male"), levels = c("female", "male")),
  age = c(30L, 40L, 25L, 50L, 35L),
  airq = c(9, 20, 30, 15, 40),
  headache = factor(c("yes", "no", "yes", "no", "yes"), levels = c("no", "yes")))

datasets <- list(sim = sim, Blackmore = Blackmore, Wong = Wong, KosteckiDillon = KosteckiDillon)
newdata <- list(sim = new, Blackmore = Blackmore_new, Wong = Wong_new,
                KosteckiDillon = KosteckiDillon_new)
## A one-sided formula is fitted with this response (cbind/factor responses: glm binomial).
default_response <- list(sim = "y", Blackmore = "log2(exercise + 5/60)", Wong = "piq",
                         KosteckiDillon = "headache")
## For data sets over 60 rows: the first 10 rows and these 5 fixed rows (1-based) are recorded.
fixed_rows <- list(Blackmore = c(100L, 250L, 500L, 750L, 945L),
                   Wong = c(50L, 100L, 200L, 300L, 331L),
                   KosteckiDillon = c(500L, 1000L, 2000L, 3000L, 4152L))

## ---------------------------------------------------------------------------------------------
## The battery: data set, formula text (exactly as written; parsed by R), optional weights
battery <- list(
  ## intercept, removal of the intercept, single numeric and integer variables
  list("sim", "y ~ 1"),
  list("sim", "~ 1"),
  list("sim", "y ~ x"),
  list("sim", "y ~ -1 + x"),
  list("sim", "y ~ 0"),
  list("sim", "~ x - 1"),
  list("sim", "~ x + 0"),
  list("sim", "~ 0 + x"),
  list("sim", "~ day"),
  list("sim", "~ k"),
  ## factors, character, logical
  list("sim", "~ a"),
  list("sim", "~ 0 + a"),
  list("sim", "~ x - 1 + a"),
  list("sim", "~ b"),
  list("sim", "~ c"),
  list("sim", "~ flag"),
  list("sim", "~ a + b + c + flag"),
  ## crossing and interactions of factors
  list("sim", "~ a*b"),
  list("sim", "~ a + b + a:b"),
  list("sim", "~ a:b"),
  list("sim", "~ 0 + a:b"),
  list("sim", "~ a + b:a"),
  list("sim", "~ b:a"),
  list("sim", "~ b*c"),
  list("sim", "~ 0 + b:c"),
  list("sim", "~ a + a:b"),
  list("sim", "~ -1 + a*b"),
  list("sim", "~ a*b - a:b"),
  list("sim", "~ a:b:c"),
  list("sim", "~ (a + b + x)^2"),
  list("sim", "~ (a + b + x)^3"),
  list("sim", "~ (a + flag)^2"),
  ## nesting
  list("sim", "~ a/x"),
  list("sim", "~ x %in% a"),
  list("sim", "~ x %in% z"),
  list("sim", "~ a/b"),
  list("sim", "~ b/(x + z)"),
  ## factor-by-numeric interactions, removal of terms, term order
  list("sim", "~ a:x"),
  list("sim", "~ x:a"),
  list("sim", "~ x:a + b"),
  list("sim", "~ a*x - x"),
  list("sim", "~ a*x - a"),
  list("sim", "~ a*x - 1"),
  list("sim", "~ x*z*a"),
  list("sim", "~ x:z"),
  list("sim", "~ x + x + z - z"),
  list("sim", "~ flag*x"),
  list("sim", "~ flag:a"),
  list("sim", "~ c:x"),
  ## ^ at the formula level
  list("sim", "~ x^2"),
  list("sim", "~ (x + z)^2"),
  ## I() and arithmetic
  list("sim", "~ I(x^2)"),
  list("sim", "~ x + I(x^2) + I(x^3)"),
  list("sim", "~ I(day^2)"),
  list("sim", "~ k + I(k^2)"),
  list("sim", "~ I(x * z)"),
  list("sim", "~ I(x/z)"),
  list("sim", "~ I((x + z)^2)"),
  list("sim", "~ I(day > 2)"),
  list("sim", "~ I(day > 2)*a"),
  list("sim", "~ I(a == \"a2\")"),
  list("sim", "~ I(day %/% 3) + I(day %% 3)"),
  list("sim", "~ I(-x) + I(1/x) + I(2 * z)"),
  list("sim", "~ I(x ** 2)"),
  list("sim", "~ x:I(z^2)"),
  list("sim", "~ I(x*z)+poly(x,2)+log( x+1 )"),
  list("sim", "~ I(x + z + x * z + x^2 + z^2 + x^3 + z^3 + log(x) + log(z) + sqrt(x))"),
  ## mathematical functions
  list("sim", "~ log(x)"),
  list("sim", "~ log2(x) + log10(z)"),
  list("sim", "~ exp(x)"),
  list("sim", "~ sqrt(x)"),
  list("sim", "~ abs(x - 1)"),
  list("sim", "~ log(x + 1)"),
  list("sim", "~ exp(-x/2)"),
  list("sim", "~ log(x):b"),
  list("sim", "~ log(x)*a + sqrt(z)"),
  ## data-dependent transformations (safe prediction)
  list("sim", "~ scale(x)"),
  list("sim", "~ scale(x)*b"),
  list("sim", "~ poly(x, 2)"),
  list("sim", "~ poly(x, 3)"),
  list("sim", "~ poly(x, 2, raw = TRUE)"),
  list("sim", "~ poly(day, 2)"),
  list("sim", "~ poly(x, 2):a"),
  list("sim", "~ a*poly(x, 2)"),
  list("sim", "~ a + poly(day, 2):b"),
  list("sim", "~ ns(x, df = 3)"),
  list("sim", "~ bs(x, df = 4)"),
  list("sim", "~ ns(x, df = 3)*b"),
  ## factor(), as.factor(), as.numeric() inside the formula
  list("sim", "~ factor(day)"),
  list("sim", "~ factor(k > 3)"),
  list("sim", "~ as.numeric(a == \"a3\")"),
  list("sim", "~ as.factor(c)"),
  list("sim", "~ as.numeric(flag)"),
  ## ordered factors: contr.poly
  list("sim", "~ ordered(day %% 3)"),
  list("sim", "~ ordered(day %% 3)*x"),
  list("sim", "~ b:ordered(day %% 3)"),
  list("sim", "~ ordered(a) + b"),
  ## offsets, responses, weights
  list("sim", "y ~ x + offset(log(off))"),
  list("sim", "y ~ x + offset(off)"),
  list("sim", "~ offset(log(off)) + a"),
  list("sim", "cbind(succ, fail) ~ x + a"),
  list("sim", "cbind(succ, size - succ) ~ x"),
  list("sim", "log(y + 10) ~ x"),
  list("sim", "y ~ x + a", weights = "w"),
  list("sim", "y ~ poly(x, 2)*b", weights = "w"),
  ## the project's data sets
  list("Blackmore", "log2(exercise + 5/60) ~ I(age - 8)*group"),
  list("Blackmore", "~ poly(age, 2)*group"),
  list("Blackmore", "~ group/age"),
  list("Blackmore", "exercise ~ age*group"),
  list("Blackmore", "~ group*ns(age, df = 3)"),
  list("Wong", "piq ~ sqrt(duration) + sex"),
  list("Wong", "~ log(days) * sex"),
  list("Wong", "~ I(days/365)"),
  list("Wong", "viq ~ poly(age, 2) + sqrt(duration)*sex"),
  list("KosteckiDillon", "~ medication * (sqrt(time + 30) + dos)"),
  list("KosteckiDillon", "~ I(time > 0)"),
  list("KosteckiDillon", "headache ~ medication + I(time > 0) + hatype"),
  list("KosteckiDillon", "~ medication*I(time > 0) + sex")
)

## ---------------------------------------------------------------------------------------------
## Helpers
capture <- function(expr) {
  warns <- character()
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) e),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  list(value = val, warnings = warns)
}
is_error <- function(v) inherits(v, "error")
parse_formula <- function(text) {
  f <- eval(parse(text = text, keep.source = FALSE)[[1]])
  stopifnot(inherits(f, "formula"))
  environment(f) <- globalenv()
  f
}
with_response <- function(f, resp_text) {
  if (length(f) == 3L) return(f)
  g <- call("~", str2lang(resp_text), f[[2L]])
  g <- eval(g)
  environment(g) <- globalenv()
  g
}
rowmajor <- function(m) {          # a list of rows, also for 0 columns
  m <- unname(as.matrix(m))
  storage.mode(m) <- if (is.logical(m)) "logical" else storage.mode(m)
  lapply(seq_len(nrow(m)), function(i) m[i, , drop = TRUE])
}
sample_rows <- function(data_name, nr) {
  if (nr <= 60L) return(seq_len(nr))
  c(1:10, fixed_rows[[data_name]])
}
dep <- function(e) paste(deparse(e, width.cutoff = 500L), collapse = " ")
## JSON by hand: jsonlite writes at most 15 significant digits, the reference needs 17.
## A length-1 vector is written as a scalar only when marked with u(); NA is null, NaN and
## +-Inf are the strings "NaN", "Inf", "-Inf"; matrices are arrays of rows.
u <- function(x) structure(x, class = c("scalar", class(x)))
json_str <- function(s) {
  s <- gsub("\\\\", "\\\\\\\\", s)
  s <- gsub("\"", "\\\\\"", s)
  s <- gsub("\n", "\\\\n", s)
  s <- gsub("\t", "\\\\t", s)
  paste0("\"", s, "\"")
}
json_atoms <- function(x) {
  if (is.factor(x)) x <- as.character(x)
  out <- character(length(x))
  na <- is.na(x)
  if (is.character(x)) {
    out[!na] <- json_str(x[!na])
  } else if (is.logical(x)) {
    out[!na] <- ifelse(x[!na], "true", "false")
  } else if (is.integer(x)) {
    out[!na] <- sprintf("%d", x[!na])
  } else if (is.double(x)) {
    nan <- is.nan(x)
    fin <- is.finite(x)
    out[fin] <- sprintf("%.17g", x[fin])
    out[nan] <- "\"NaN\""
    out[!fin & !na] <- ifelse(x[!fin & !na] > 0, "\"Inf\"", "\"-Inf\"")
    na <- na & !nan
  } else stop("cannot write type ", typeof(x))
  out[na] <- "null"
  out
}
json_obj <- function(x) {
  if (is.null(x)) return("null")
  if (inherits(x, "scalar")) {
    stopifnot(length(x) == 1L)
    return(json_atoms(unclass(x)))
  }
  if (is.data.frame(x)) x <- as.list(x)
  if (is.matrix(x)) {
    return(paste0("[", paste(vapply(seq_len(nrow(x)), function(i)
      paste0("[", paste(json_atoms(x[i, , drop = TRUE]), collapse = ","), "]"), ""),
      collapse = ","), "]"))
  }
  if (is.list(x)) {
    if (length(x) == 0L)
      return(if (!is.null(names(x)) || inherits(x, "json_object")) "{}" else "[]")
    parts <- vapply(x, json_obj, "")
    nm <- names(x)
    if (is.null(nm)) return(paste0("[", paste(parts, collapse = ","), "]"))
    return(paste0("{", paste(paste0(json_str(nm), ":", parts), collapse = ","), "}"))
  }
  paste0("[", paste(json_atoms(unname(x)), collapse = ","), "]")
}

run_entry <- function(id, spec) {
  data_name <- spec[[1L]]
  ftext <- spec[[2L]]
  weights <- spec$weights
  d <- datasets[[data_name]]
  f <- parse_formula(ftext)
  all_warns <- character()
  mfc <- capture(model.frame(f, d))
  mmc <- capture(model.matrix(f, d))
  all_warns <- c(all_warns, mfc$warnings, mmc$warnings)
  if (is_error(mfc$value) || is_error(mmc$value))
    stop(sprintf("%s: %s failed: %s", id, ftext,
                 conditionMessage(if (is_error(mmc$value)) mmc$value else mfc$value)))
  mf <- mfc$value
  mm <- mmc$value
  tt <- terms(f)
  nr <- nrow(mm)
  rows <- sample_rows(data_name, nr)
  e <- list(id = u(id), data = u(data_name), formula = u(ftext))
  e$term_labels <- as.character(attr(tt, "term.labels"))
  e$order <- as.integer(attr(tt, "order"))
  e$intercept <- u(attr(tt, "intercept"))
  e$colnames <- as.character(colnames(mm))   # character(0) for no columns
  e$assign <- as.integer(attr(mm, "assign"))
  ctr <- attr(mm, "contrasts")
  e$contrasts <- if (is.null(ctr)) structure(list(), class = "json_object") else lapply(ctr, u)
  e$data_classes <- as.list(attr(terms(mf), "dataClasses"))
  e$data_classes <- lapply(e$data_classes, u)
  e$predvars <- u(paste(deparse(attr(terms(mf), "predvars"), width.cutoff = 500L,
                               control = c("keepNA", "keepInteger", "niceNames", "digits17")),
                       collapse = " "))
  e$nrow <- u(nr)
  if (nr > 60L) e$rows <- rows
  e$matrix <- rowmajor(mm[rows, , drop = FALSE])
  if (nr > 60L) e$colsums <- unname(colSums(mm))
  if (attr(tt, "response") == 1L) {
    r <- model.response(mf)
    e$response <- if (is.matrix(r)) {
      e$response_colnames <- colnames(r)
      rowmajor(r[rows, , drop = FALSE])
    } else if (is.factor(r)) as.character(r[rows]) else unname(r[rows])
    if (nr > 60L && is.numeric(r)) e$response_colsums <- unname(colSums(as.matrix(r)))
  }
  off <- model.offset(mf)
  if (!is.null(off)) {
    e$offset <- unname(off[rows])
    if (nr > 60L) e$offset_sum <- u(sum(off))
  }
  ## the fit and its predictions on the new data
  g <- with_response(f, default_response[[data_name]])
  resp <- model.response(model.frame(g, d))
  binom <- is.matrix(resp) || is.factor(resp)
  wtxt <- if (is.null(weights)) "" else paste0(", weights = ", weights)
  fit_text <- if (binom) {
    sprintf("glm(%s, family = binomial, data = %s%s)", dep(g), data_name, wtxt)
  } else sprintf("lm(%s, data = %s%s)", dep(g), data_name, wtxt)
  e$fit <- u(fit_text)
  env <- list2env(list(g = g, d = d), parent = globalenv())
  fit_call <- if (binom) quote(glm(g, family = binomial, data = d)) else quote(lm(g, data = d))
  if (!is.null(weights)) fit_call$weights <- as.name(weights)   # a column of the data
  fc <- capture(eval(fit_call, env))
  all_warns <- c(all_warns, fc$warnings)
  if (is_error(fc$value)) stop(sprintf("%s: fit failed: %s", id, conditionMessage(fc$value)))
  fit <- fc$value
  e$coef_names <- as.character(names(coef(fit)))
  e$coef <- as.double(coef(fit))
  nd <- newdata[[data_name]]
  ttn <- delete.response(terms(fit))
  mnc <- capture({
    mfn <- model.frame(ttn, nd, xlev = fit$xlevels)
    model.matrix(ttn, mfn, contrasts.arg = fit$contrasts)
  })
  pc <- capture(predict(fit, newdata = nd))
  all_warns <- c(all_warns, mnc$warnings, pc$warnings)
  if (is_error(mnc$value)) {
    e$matrix_new_error <- u(conditionMessage(mnc$value))
  } else {
    e$matrix_new <- rowmajor(mnc$value)
  }
  if (is_error(pc$value)) {
    e$predict_error <- u(conditionMessage(pc$value))
  } else {
    e$predict_type <- u(if (binom) "link" else "response")
    e$predict_new <- unname(pc$value)
  }
  e$warnings <- unique(all_warns)
  list(entry = e, mm = mm, fit = fit)
}

## ---------------------------------------------------------------------------------------------
## Run the battery
cat(R.version.string, "| splines", as.character(packageVersion("splines")),
    "| jsonlite", as.character(packageVersion("jsonlite")), "\n")
cat("Simulated data (as read back from", sim_csv, "):\n")
str(sim)
print(head(sim, 5))
cat("\nNew data (", new_csv, "):\n", sep = "")
print(new)
cat("\n")

entries <- character()
for (i in seq_along(battery)) {
  id <- sprintf("f%03d", i)
  res <- run_entry(id, battery[[i]])
  e <- res$entry
  cat(sprintf("%s [%s] %s\n", id, e$data, e$formula))
  cat("   terms:   ", paste(e$term_labels, collapse = " | "), "\n")
  cat("   colnames:", paste(e$colnames, collapse = " | "), "\n")
  cat("   assign:  ", paste(e$assign, collapse = " "), "  nrow:", e$nrow, "\n")
  if (length(e$contrasts)) cat("   contrasts:", paste(names(e$contrasts), unlist(e$contrasts),
                                                    sep = "=", collapse = ", "), "\n")
  cat("   fit:     ", e$fit, "\n")
  cat("   coef:    ", paste(format(e$coef, digits = 7), collapse = " "), "\n")
  if (!is.null(e$predict_new))
    cat("   predict: ", paste(format(e$predict_new, digits = 7), collapse = " "), "\n")
  if (!is.null(e$predict_error)) cat("   predict error:", e$predict_error, "\n")
  if (length(e$warnings)) cat("   warnings:", paste(e$warnings, collapse = " || "), "\n")
  print(head(res$mm, 3), digits = 7)
  entries[i] <- json_obj(e)
}
cat("\n", length(entries), "formulas\n\n")

## ---------------------------------------------------------------------------------------------
## What R refuses or warns on
summarise_value <- function(v) {
  if (is_error(v)) return(NULL)
  if (inherits(v, c("lm", "glm"))) {
    return(list(class = class(v), coef_names = names(coef(v)), coef = unname(coef(v)),
                model_frame_nrow = u(nrow(model.frame(v)))))
  }
  if (is.data.frame(v)) {
    return(list(class = u("data.frame"), nrow = u(nrow(v)), names = names(v),
                row_names = rownames(v),
                columns = lapply(v, function(col)
                  if (is.matrix(col)) rowmajor(col)
                  else if (is.factor(col)) as.character(col) else unname(col))))
  }
  if (is.matrix(v)) {
    return(list(class = u("matrix"), dim = dim(v), colnames = colnames(v),
                row_names = rownames(v), assign = attr(v, "assign"), matrix = rowmajor(v)))
  }
  list(class = class(v), value = unname(unclass(v)))
}
error_cases <- list(
  list("~ sqrt(x - 2)", "model.matrix(~ sqrt(x - 2), sim)",
       "NaN with a warning, not an error; model.matrix's model.frame then drops those rows (na.omit)"),
  list("~ sqrt(x - 2)", "model.frame(~ sqrt(x - 2), sim, na.action = na.pass)",
       "the NaN values themselves"),
  list("~ log(z - 1)", "model.matrix(~ log(z - 1), sim)", "NaN for z < 1, -Inf never (z != 1)"),
  list("~ log(-1)", "model.matrix(~ log(-1), sim)", "a constant term of length 1"),
  list("~ x + log(-1)", "model.matrix(~ x + log(-1), sim)",
       "the same constant beside a variable of the data"),
  list("~ a^2", "model.matrix(~ a^2, sim)", "^ on one factor at formula level: silently a"),
  list("~ (a + b)^2", "model.matrix(~ (a + b)^2, sim)", "for comparison: a + b + a:b"),
  list("~ x^0.5", "model.matrix(~ x^0.5, sim)", "non-integer power at formula level"),
  list("~ (a + x)^0", "model.matrix(~ (a + x)^0, sim)", "power 0 at formula level"),
  list("~ I(a^2)", "model.matrix(~ I(a^2), sim)", "arithmetic on a factor inside I()"),
  list("~ log(a)", "model.matrix(~ log(a), sim)", "math function on a factor"),
  list("~ poly(x, 50)", "model.matrix(~ poly(x, 50), sim)", "degree too high"),
  list("~ poly(a, 2)", "model.matrix(~ poly(a, 2), sim)", "poly of a factor"),
  list("cbind(succ, a) ~ x", "model.frame(cbind(succ, a) ~ x, sim)",
       "cbind of an integer and a factor: R takes the factor's codes"),
  list("cbind(succ, a) ~ x", "glm(cbind(succ, a) ~ x, family = binomial, data = sim)",
       "and glm fits it"),
  list("cbind(succ, c) ~ x", "model.frame(cbind(succ, c) ~ x, sim)",
       "cbind of an integer and a character vector: a character matrix"),
  list("cbind(succ, c) ~ x", "glm(cbind(succ, c) ~ x, family = binomial, data = sim)",
       "character matrix response"),
  list("~ x + nosuchvar", "model.matrix(~ x + nosuchvar, sim)", "unknown variable"),
  list("~ x | a", "model.matrix(~ x | a, sim)", "| is an ordinary function call for model.matrix"),
  list("y ~ factor(day)", "predict(lm(y ~ factor(day), sim), data.frame(day = 10L))",
       "a new factor level in predict"),
  list("y ~ c", "predict(lm(y ~ c, sim), data.frame(c = \"s\"))",
       "a new level of a character predictor in predict"),
  list("y ~ bs(x, df = 4)", "predict(lm(y ~ bs(x, df = 4), sim), data.frame(x = c(0.1, 5)))",
       "bs outside its boundary knots"),
  list("y ~ ns(x, df = 3)", "predict(lm(y ~ ns(x, df = 3), sim), data.frame(x = c(0.1, 5)))",
       "ns outside its boundary knots (linear extrapolation)"),
  list("y ~ a:b", "predict(lm(y ~ a:b, sim), new)", "rank-deficient fit"),
  list("~ a", "model.matrix(~ a, sim[sim$a != \"a3\", ])",
       "model.matrix keeps an unused level as a column of zeros"),
  list("y ~ a", "lm(y ~ a, sim, subset = a != \"a3\")",
       "lm's model.frame drops unused levels (drop.unused.levels = TRUE)"),
  list("~ offset(a)", "model.matrix(~ offset(a) + x, sim)", "offset() of a factor, model.matrix"),
  list("y ~ offset(a) + x", "lm(y ~ offset(a) + x, sim)", "offset() of a factor, lm"),
  list("y ~ x + offset(log(off[1:3]))", "model.frame(y ~ x + offset(log(off[1:3])), sim)",
       "offset of the wrong length"),
  list("~ factor(x)", "ncol(model.matrix(~ factor(x), sim))",
       "factor() of a continuous variable: one column per distinct value")
)
cat("Errors and warnings\n")
errs <- character()
for (i in seq_along(error_cases) ) {
  ec <- error_cases[[i]]
  id <- sprintf("e%02d", i)
  r <- capture(eval(parse(text = ec[[2L]])[[1L]], globalenv()))
  e <- list(id = u(id), formula = u(ec[[1L]]), call = u(ec[[2L]]), note = u(ec[[3L]]))
  if (is_error(r$value)) {
    e$status <- u("error")
    e$error <- u(conditionMessage(r$value))
    cl <- conditionCall(r$value)
    cl <- if (is.null(cl)) NULL else dep(cl)
    if (!is.null(cl) && nchar(cl) > 200L) cl <- paste0(substr(cl, 1L, 200L), " ...")
    e$error_call <- if (is.null(cl)) NULL else u(cl)   # (long calls cut at 200 characters)
  } else e$status <- u(if (length(r$warnings)) "warning" else "ok")
  e$warnings <- r$warnings
  e$result <- summarise_value(r$value)
  cat(sprintf("%s %s\n   %s\n", id, ec[[2L]], ec[[3L]]))
  if (is_error(r$value)) cat("   Error", if (!is.null(e$error_call)) paste0("in ", e$error_call),
                             ":", e$error, "\n")
  if (length(r$warnings)) cat("   Warning:", paste(r$warnings, collapse = " || "), "\n")
  if (!is_error(r$value)) {
    v <- r$value
    if (inherits(v, c("lm", "glm"))) print(coef(v))
    else if (is.matrix(v) || is.data.frame(v)) {
      cat("   dim:", dim(v), "\n"); print(head(v, 4))
    } else print(v)
  }
  errs[i] <- json_obj(e)
}

## ---------------------------------------------------------------------------------------------
## formulas.json, one formula per line
meta <- list(
  r_version = u(R.version.string),
  splines_version = u(as.character(packageVersion("splines"))),
  jsonlite_version = u(as.character(packageVersion("jsonlite"))),
  contrasts = unname(getOption("contrasts")),
  na_action = u("na.omit"),
  sim_csv = u(sim_csv), new_csv = u(new_csv),
  factor_levels = list(a = c("a1", "a2", "a3"), b = c("lo", "hi"),
                       c = sort(unique(sim$c)),   # a character column: levels by sort
                       Blackmore.group = levels(Blackmore$group),
                       Wong.sex = levels(Wong$sex),
                       KosteckiDillon.medication = levels(KosteckiDillon$medication),
                       KosteckiDillon.hatype = levels(KosteckiDillon$hatype),
                       KosteckiDillon.headache = levels(KosteckiDillon$headache),
                       KosteckiDillon.sex = levels(KosteckiDillon$sex)),
  default_response = lapply(default_response, u),
  fixed_rows = fixed_rows,
  large_data_rows = u("data sets over 60 rows: rows 1..10 and fixed_rows (1-based), plus colsums"),
  digits = u(17L)
)
data_new <- list(Blackmore = Blackmore_new, Wong = Wong_new, KosteckiDillon = KosteckiDillon_new)
con <- file(json_out, "w")
writeLines("{", con)
writeLines(paste0("\"meta\": ", json_obj(meta), ","), con)
writeLines(paste0("\"data_new\": ", json_obj(data_new), ","), con)
writeLines("\"formulas\": [", con)
writeLines(paste0(entries, c(rep(",", length(entries) - 1L), "")), con)
writeLines("],", con)
writeLines("\"errors\": [", con)
writeLines(paste0(errs, c(rep(",", length(errs) - 1L), "")), con)
writeLines("]", con)
writeLines("}", con)
close(con)
stopifnot(length(fromJSON(json_out, simplifyVector = FALSE)$formulas) == length(battery))
cat("\nwrote", json_out, "with", length(entries), "formulas and", length(errs), "error cases\n")
