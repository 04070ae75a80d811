-- Quarto-style cross-references for plain pandoc (the offline PDF, through Typst).
--
-- Plain pandoc reads `@fig-x` and `@sec-x` as citations. This filter turns each into a
-- reference: a figure's a native Typst `@fig-x` (Typst numbers figures by chapter,
-- tools/book.typ), a section's a link titled as the section. An unresolved label stops the
-- render. It also draws a cell's warnings (a callout-warning div) as a Typst box.

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

local function resolve(cite)
  local id = cite.citations[1].id
  if not (id:match("^fig%-") or id:match("^sec%-")) then return nil end
  if figures[id] then
    if is_typst then return pandoc.RawInline("typst", "@" .. id) end
    return pandoc.Link({ pandoc.Str("Figure " .. figures[id]) }, "#" .. id)  -- (a non-Typst writer)
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
  return doc:walk({ Cite = resolve, Div = warning_box })
end
