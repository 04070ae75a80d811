-- Quarto-style cross-references for plain pandoc (the offline render path).
--
-- Plain pandoc reads `@fig-x` and `@sec-x` as citations. This filter numbers the
-- labelled figures in document order, prefixes their captions with "Figure N:" in
-- HTML (Typst numbers figures itself), and turns each such citation into a link:
-- "Figure N" for a figure (Typst: a native `@fig-x` reference) and the section's
-- title for a section. An unresolved label stops the render.

local is_typst = FORMAT:match("typst") ~= nil
local figures, sections = {}, {}

local function collect(doc)
  local n = 0
  doc:walk({
    Figure = function(fig)
      if fig.identifier ~= "" then
        n = n + 1
        figures[fig.identifier] = n
      end
    end,
    Header = function(h)
      if h.identifier ~= "" then
        sections[h.identifier] = pandoc.utils.stringify(h.content)
      end
    end,
  })
end

local function number_caption(fig)
  local n = figures[fig.identifier]
  if is_typst or not n then return nil end
  local first = fig.caption.long[1]
  if first and (first.t == "Plain" or first.t == "Para") then
    first.content:insert(1, pandoc.Space())
    first.content:insert(1, pandoc.Strong({ pandoc.Str("Figure " .. n .. ":") }))
  end
  return fig
end

local function resolve(cite)
  local id = cite.citations[1].id
  if not (id:match("^fig%-") or id:match("^sec%-")) then return nil end
  if figures[id] then
    if is_typst then return pandoc.RawInline("typst", "@" .. id) end
    return pandoc.Link({ pandoc.Str("Figure " .. figures[id]) }, "#" .. id)
  end
  if sections[id] then
    return pandoc.Link(pandoc.Inlines(sections[id]), "#" .. id)
  end
  error("unresolved cross-reference @" .. id)
end

-- A warning box (a cell's stderr; Quarto's callout-warning): Typst has no classes, so the
-- box is drawn there; the website styles the class (book.css).
local function warning_box(div)
  if not is_typst or not div.classes:includes("callout-warning") then return nil end
  local blocks = pandoc.List({ pandoc.RawBlock("typst",
    '#block(fill: rgb("#fff4dc"), stroke: (left: 2pt + rgb("#b35900")), inset: 6pt, width: 100%)[') })
  blocks:extend(div.content)
  blocks:insert(pandoc.RawBlock("typst", "]"))
  return blocks
end

function Pandoc(doc)
  collect(doc)
  return doc:walk({ Figure = number_caption, Cite = resolve, Div = warning_box })
end
