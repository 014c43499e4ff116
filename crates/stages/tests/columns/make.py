#!/usr/bin/env python3
"""Writes two-column Portuguese pages, the layout of a clinic newsletter, with reportlab:

- columns-frames.pdf: a title across the page, then two justified columns flowed by reportlab's
  frames (the content stream holds column one, then column two) and a footer across the page;
- columns-rows.pdf: the same kind of page drawn line by line across both columns (each row's left
  line, then its right line), as some layout programs write it, so only the geometry tells the
  columns apart;
- table-rows.pdf: a laboratory report, a table of narrow cells (analyte, result, unit, reference)
  whose gaps line up like gutters; it must stay rows, each result next to its analyte.

pdftotext (poppler) reads each column whole; that is the reading order the text stage must give.

Run in this folder: pip install reportlab; python3 make.py
"""
from reportlab.lib.enums import TA_JUSTIFY
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas
from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

LEFT = [
    "A clínica inaugura na próxima semana o novo serviço de exames laboratoriais, com coleta "
    "domiciliar para pacientes idosos e resultados entregues pela internet em até dois dias úteis.",
    "O agendamento pode ser feito pelo telefone ou pessoalmente na recepção, de segunda a "
    "sexta-feira, das sete às dezenove horas, sem custo adicional para os conveniados.",
    "Os resultados de hemograma completo, glicemia de jejum e colesterol total passam a ser "
    "liberados eletronicamente, e cada paciente recebe um aviso quando o laudo estiver disponível.",
]
RIGHT = [
    "A equipe de enfermagem participou de um treinamento sobre segurança do paciente, promovido "
    "em parceria com a federação das indústrias, que publicou o relatório no site da Findes.",
    "Na área de imagem, o novo aparelho de ultrassonografia permite exames com maior precisão e "
    "conforto; as imagens ficam arquivadas e o médico solicitante pode consultá-las a qualquer hora.",
    "Lembramos que o jejum para exames de sangue deve ser de oito a doze horas, conforme a "
    "orientação do laboratório. A central de atendimento esclarece qualquer dúvida sobre o preparo.",
]
TITLE = "Boletim Informativo da Clínica São Lucas"
FOOTER = "Edição de dezembro de 2026 - distribuição gratuita"

W, H = A4
MARGIN, GUTTER = 56, 24
COL = (W - 2 * MARGIN - GUTTER) / 2


def frames():
    style = ParagraphStyle("body", fontName="Helvetica", fontSize=10, leading=13, alignment=TA_JUSTIFY, spaceAfter=8)
    head = ParagraphStyle("head", fontName="Helvetica-Bold", fontSize=16, leading=20)
    foot = ParagraphStyle("foot", fontName="Helvetica", fontSize=8, leading=10)
    top, bottom = H - MARGIN - 40, MARGIN + 30
    page = PageTemplate(
        frames=[
            Frame(MARGIN, top, W - 2 * MARGIN, 40, id="title", showBoundary=0),
            Frame(MARGIN, bottom, COL, top - bottom, id="left"),
            Frame(MARGIN + COL + GUTTER, bottom, COL, top - bottom, id="right"),
            Frame(MARGIN, MARGIN, W - 2 * MARGIN, 30, id="footer"),
        ]
    )
    doc = BaseDocTemplate("columns-frames.pdf", pagesize=A4, pageTemplates=[page], invariant=1)
    from reportlab.platypus import FrameBreak

    story = [Paragraph(TITLE, head), FrameBreak()]
    story += [Paragraph(p, style) for p in LEFT] + [FrameBreak()]
    story += [Paragraph(p, style) for p in RIGHT] + [FrameBreak(), Paragraph(FOOTER, foot)]
    doc.build(story)


def wrap(paragraphs, font, size, width):
    lines = []
    for p in paragraphs:
        line = ""
        for word in p.split():
            candidate = f"{line} {word}".strip()
            if stringWidth(candidate, font, size) > width and line:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
        lines.append("")
    return lines[:-1]


def rows():
    c = canvas.Canvas("columns-rows.pdf", pagesize=A4, invariant=1)
    c.setFont("Helvetica-Bold", 16)
    c.drawString(MARGIN, H - MARGIN - 16, TITLE)
    left, right = wrap(LEFT, "Helvetica", 10, COL), wrap(RIGHT, "Helvetica", 10, COL)
    y = H - MARGIN - 50
    for i in range(max(len(left), len(right))):
        t = c.beginText()
        t.setFont("Helvetica", 10)
        for x, col in ((MARGIN, left), (MARGIN + COL + GUTTER, right)):
            if i < len(col) and col[i]:
                t.setTextOrigin(x, y)
                t.textOut(col[i])
        c.drawText(t)
        y -= 13
    c.setFont("Helvetica", 8)
    c.drawString(MARGIN, MARGIN + 10, FOOTER)
    c.showPage()
    c.save()


def table():
    c = canvas.Canvas("table-rows.pdf", pagesize=A4, invariant=1)
    c.setFont("Helvetica-Bold", 14)
    c.drawString(MARGIN, H - MARGIN - 14, "Laudo de exames laboratoriais")
    results = [
        ("Exame", "Resultado", "Unidade", "Referência"),
        ("Hemoglobina", "13,5", "g/dL", "12,0 a 16,0"),
        ("Hematócrito", "40,1", "%", "36,0 a 46,0"),
        ("Leucócitos", "6.800", "/mm³", "4.000 a 11.000"),
        ("Plaquetas", "250.000", "/mm³", "150.000 a 450.000"),
        ("Glicemia de jejum", "92", "mg/dL", "70 a 99"),
        ("Colesterol total", "180", "mg/dL", "até 190"),
    ]
    y = H - MARGIN - 50
    for row in results:
        for x, cell in zip((MARGIN, MARGIN + 170, MARGIN + 260, MARGIN + 340), row):
            c.setFont("Helvetica", 10)
            c.drawString(x, y, cell)
        y -= 16
    c.showPage()
    c.save()


frames()
rows()
table()
