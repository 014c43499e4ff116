//! Synthetic exam results for the demo, the load command and the search benches: Portuguese lab
//! reports (hemograma, glicemia, lipidograma, urina tipo I, função renal, tireoide, hepatograma)
//! as multi-page PDFs written with `printpdf` (built-in Helvetica, WinAnsi-encoded accents), with
//! values around their reference ranges, and exam images (JPEG). Deterministic for a seed.
//!
//! Everything here is invented: names, ids and values are drawn from small tables.

use printpdf::{
    BuiltinFont, Mm, Op, PdfDocument, PdfFontHandle, PdfPage, PdfSaveOptions, Point, Pt, TextItem,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FIRST: &[&str] = &[
    "Ana",
    "João",
    "Maria",
    "José",
    "Antônio",
    "Francisca",
    "Luís",
    "Júlia",
    "Márcio",
    "Conceição",
    "Inês",
    "Sérgio",
    "Lúcia",
    "Fábio",
    "Cláudia",
    "Vinícius",
    "Letícia",
    "Otávio",
    "Bárbara",
    "Caetano",
];
const LAST: &[&str] = &[
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Conceição",
    "Araújo",
    "Gonçalves",
    "Simões",
    "Magalhães",
    "Brandão",
    "Assunção",
    "Lopes",
    "Guimarães",
    "Falcão",
    "Estêvão",
    "Pereira",
];
const DOCTORS: &[&str] = &[
    "Dra. Helena Rocha",
    "Dr. Mário Tavares",
    "Dra. Patrícia Leão",
    "Dr. Rogério Antunes",
];

/// One analyte: name, unit, reference range, and how values spread around it.
struct Analyte {
    name: &'static str,
    unit: &'static str,
    low: f64,
    high: f64,
    decimals: usize,
}

const fn a(name: &'static str, unit: &'static str, low: f64, high: f64, decimals: usize) -> Analyte {
    Analyte {
        name,
        unit,
        low,
        high,
        decimals,
    }
}

/// One exam: title, material, method, analytes, and a remark to pick from.
struct Exam {
    title: &'static str,
    material: &'static str,
    method: &'static str,
    analytes: &'static [Analyte],
    remarks: &'static [&'static str],
}

const EXAMS: &[Exam] = &[
    Exam {
        title: "HEMOGRAMA COMPLETO",
        material: "Sangue total com EDTA",
        method: "Citometria de fluxo e impedância",
        analytes: &[
            a("Hemácias", "milhões/mm³", 4.2, 5.9, 2),
            a("Hemoglobina", "g/dL", 12.0, 17.5, 1),
            a("Hematócrito", "%", 36.0, 52.0, 1),
            a("VCM", "fL", 80.0, 100.0, 1),
            a("HCM", "pg", 27.0, 33.0, 1),
            a("CHCM", "g/dL", 32.0, 36.0, 1),
            a("RDW", "%", 11.5, 14.5, 1),
            a("Leucócitos", "/mm³", 4000.0, 11000.0, 0),
            a("Neutrófilos", "%", 40.0, 75.0, 0),
            a("Linfócitos", "%", 20.0, 45.0, 0),
            a("Monócitos", "%", 2.0, 10.0, 0),
            a("Eosinófilos", "%", 1.0, 6.0, 0),
            a("Plaquetas", "mil/mm³", 150.0, 450.0, 0),
        ],
        remarks: &[
            "Série vermelha sem alterações morfológicas significativas.",
            "Presença de anisocitose discreta. Sugere-se correlação clínica.",
            "Contagem de plaquetas confirmada em lâmina.",
        ],
    },
    Exam {
        title: "GLICEMIA DE JEJUM E HEMOGLOBINA GLICADA",
        material: "Soro e sangue total",
        method: "Enzimático (hexoquinase); HPLC",
        analytes: &[
            a("Glicose em jejum", "mg/dL", 70.0, 99.0, 0),
            a("Hemoglobina glicada (HbA1c)", "%", 4.0, 5.6, 1),
        ],
        remarks: &[
            "Jejum de 8 horas informado pelo paciente.",
            "Valores de glicose entre 100 e 125 mg/dL sugerem glicemia de jejum alterada.",
        ],
    },
    Exam {
        title: "LIPIDOGRAMA",
        material: "Soro",
        method: "Colorimétrico enzimático",
        analytes: &[
            a("Colesterol total", "mg/dL", 0.0, 190.0, 0),
            a("HDL-colesterol", "mg/dL", 40.0, 90.0, 0),
            a("LDL-colesterol", "mg/dL", 0.0, 130.0, 0),
            a("VLDL-colesterol", "mg/dL", 5.0, 30.0, 0),
            a("Triglicerídeos", "mg/dL", 0.0, 150.0, 0),
        ],
        remarks: &[
            "Metas terapêuticas conforme risco cardiovascular estimado.",
            "LDL calculado pela equação de Martin.",
        ],
    },
    Exam {
        title: "URINA TIPO I (EAS)",
        material: "Urina, jato médio",
        method: "Tira reagente e sedimentoscopia",
        analytes: &[
            a("Densidade", "", 1.005, 1.030, 3),
            a("pH", "", 5.0, 7.5, 1),
            a("Leucócitos", "/campo", 0.0, 5.0, 0),
            a("Hemácias", "/campo", 0.0, 3.0, 0),
            a("Células epiteliais", "/campo", 0.0, 5.0, 0),
        ],
        remarks: &[
            "Ausência de proteínas, glicose, cetonas e nitrito.",
            "Bactérias em pequena quantidade. Cilindros ausentes.",
        ],
    },
    Exam {
        title: "FUNÇÃO RENAL",
        material: "Soro",
        method: "Cinético e enzimático",
        analytes: &[
            a("Ureia", "mg/dL", 15.0, 45.0, 0),
            a("Creatinina", "mg/dL", 0.6, 1.2, 2),
            a(
                "Taxa de filtração glomerular estimada",
                "mL/min/1,73m²",
                90.0,
                120.0,
                0,
            ),
            a("Ácido úrico", "mg/dL", 2.5, 7.0, 1),
        ],
        remarks: &["Filtração glomerular estimada pela equação CKD-EPI 2021."],
    },
    Exam {
        title: "FUNÇÃO TIREOIDIANA",
        material: "Soro",
        method: "Quimioluminescência",
        analytes: &[
            a("TSH", "µUI/mL", 0.4, 4.5, 2),
            a("T4 livre", "ng/dL", 0.8, 1.8, 2),
        ],
        remarks: &["Interpretar em conjunto com a clínica e uso de medicações."],
    },
    Exam {
        title: "HEPATOGRAMA",
        material: "Soro",
        method: "Cinético UV",
        analytes: &[
            a("TGO (AST)", "U/L", 5.0, 40.0, 0),
            a("TGP (ALT)", "U/L", 7.0, 56.0, 0),
            a("Gama-GT", "U/L", 8.0, 61.0, 0),
            a("Fosfatase alcalina", "U/L", 40.0, 129.0, 0),
            a("Bilirrubina total", "mg/dL", 0.2, 1.2, 2),
        ],
        remarks: &["Amostra sem hemólise ou lipemia."],
    },
];

/// A generated report.
#[derive(Debug, Clone)]
pub struct SyntheticReport {
    /// Patient id (e.g. `pac-000042`).
    pub patient_id: String,
    /// Patient name (invented).
    pub patient_name: String,
    /// Exam id.
    pub exam_id: String,
    /// Titles of the exams in the report.
    pub exams: Vec<String>,
    /// The PDF.
    pub pdf: Vec<u8>,
}

/// Deterministic source of synthetic patients, reports and images.
pub struct Generator {
    rng: StdRng,
    clinic: String,
    patients: usize,
    next_exam: u64,
    exams_per_report: std::ops::RangeInclusive<usize>,
}

impl Generator {
    /// A generator for `clinic`, drawing patients from `patients` invented ones.
    pub fn new(seed: u64, clinic: impl Into<String>, patients: usize) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            clinic: clinic.into(),
            patients: patients.max(1),
            next_exam: 1,
            exams_per_report: 2..=4,
        }
    }

    /// Exams per report (default 2 to 4; two fit a page, so 3 to 6 gives two- to three-page
    /// reports). Clamped to 1 ..= the exams the generator knows.
    pub fn with_exams_per_report(mut self, range: std::ops::RangeInclusive<usize>) -> Self {
        let lo = (*range.start()).clamp(1, EXAMS.len());
        self.exams_per_report = lo..=(*range.end()).clamp(lo, EXAMS.len());
        self
    }

    fn patient(&mut self) -> (String, String, String) {
        let n = self.rng.random_range(0..self.patients);
        // The name is a function of the patient number, so a patient keeps one name.
        let mut by_patient = StdRng::seed_from_u64(n as u64);
        let name = format!(
            "{} {} {}",
            FIRST[by_patient.random_range(0..FIRST.len())],
            LAST[by_patient.random_range(0..LAST.len())],
            LAST[by_patient.random_range(0..LAST.len())]
        );
        let birth = format!(
            "{:02}/{:02}/{}",
            by_patient.random_range(1..=28),
            by_patient.random_range(1..=12),
            by_patient.random_range(1940..=2015)
        );
        (format!("pac-{n:06}"), name, birth)
    }

    /// The text lines of a report (also what the PDF shows), and its exam titles.
    fn report_lines(
        &mut self,
        patient: &(String, String, String),
        exam_id: &str,
    ) -> (Vec<Vec<String>>, Vec<String>) {
        let count = self.rng.random_range(self.exams_per_report.clone());
        let mut picked: Vec<usize> = Vec::new();
        while picked.len() < count {
            let i = self.rng.random_range(0..EXAMS.len());
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        let doctor = DOCTORS[self.rng.random_range(0..DOCTORS.len())];
        let date = format!(
            "{:02}/{:02}/2026",
            self.rng.random_range(1..=28),
            self.rng.random_range(1..=11)
        );
        let header = vec![
            self.clinic.to_uppercase(),
            "Laboratório de Análises Clínicas — Responsável técnico: Dr. Álvaro Queiroz, CRM 12345".into(),
            String::new(),
            format!("Paciente: {}    Identificação: {}", patient.1, patient.0),
            format!("Nascimento: {}    Exame: {exam_id}    Coleta: {date}", patient.2),
            format!("Solicitante: {doctor}"),
            String::new(),
        ];
        let mut pages = Vec::new();
        let mut titles = Vec::new();
        // Two exams per page at most: reports run to two or three pages.
        for chunk in picked.chunks(2) {
            let mut lines = header.clone();
            for &i in chunk {
                let exam = &EXAMS[i];
                titles.push(exam.title.to_owned());
                lines.push(exam.title.to_owned());
                lines.push(format!("Material: {}    Método: {}", exam.material, exam.method));
                lines.push(format!(
                    "{:<40}{:>14}   {:<16}{}",
                    "Exame", "Resultado", "Unidade", "Valores de referência"
                ));
                for an in exam.analytes {
                    let span = (an.high - an.low).max(an.high * 0.2);
                    let v = self
                        .rng
                        .random_range((an.low - span * 0.15).max(0.0)..(an.high + span * 0.25));
                    let flag = if v > an.high {
                        "  ALTO"
                    } else if v < an.low {
                        "  BAIXO"
                    } else {
                        ""
                    };
                    let reference = if an.low == 0.0 {
                        format!("inferior a {:.*}", an.decimals, an.high)
                    } else {
                        format!("{:.*} a {:.*}", an.decimals, an.low, an.decimals, an.high)
                    };
                    lines.push(format!(
                        "{:<40}{:>14}   {:<16}{}{}",
                        an.name,
                        format!("{v:.*}", an.decimals).replace('.', ","),
                        an.unit,
                        reference.replace('.', ","),
                        flag
                    ));
                }
                let remark = exam.remarks[self.rng.random_range(0..exam.remarks.len())];
                lines.push(format!("Observação: {remark}"));
                lines.push(String::new());
            }
            lines.push("Resultados liberados após conferência. Valores de referência para adultos.".into());
            pages.push(lines);
        }
        let total = pages.len();
        for (i, p) in pages.iter_mut().enumerate() {
            p.push(format!("Página {} de {total}", i + 1));
        }
        (pages, titles)
    }

    /// A report's text only (pages separated by form feeds, as the text stage stores it), without
    /// rendering a PDF: for index and search benches over many documents. Returns (patient id,
    /// exam id, text).
    pub fn report_text(&mut self) -> (String, String, String) {
        let patient = self.patient();
        let exam_id = format!("exm-{:07}", self.next_exam);
        self.next_exam += 1;
        let (pages, _) = self.report_lines(&patient, &exam_id);
        let text = pages
            .iter()
            .map(|lines| lines.join("\n"))
            .collect::<Vec<_>>()
            .join("\u{c}");
        (patient.0, exam_id, text)
    }

    /// A lab report (two to four exams on one to two A4 pages by default), as a PDF.
    pub fn report(&mut self) -> SyntheticReport {
        let patient = self.patient();
        let exam_id = format!("exm-{:07}", self.next_exam);
        self.next_exam += 1;
        let (pages, exams) = self.report_lines(&patient, &exam_id);
        let mut doc = PdfDocument::new(&format!("Laudo {exam_id}"));
        let pdf_pages: Vec<PdfPage> = pages
            .iter()
            .map(|lines| PdfPage::new(Mm(210.0), Mm(297.0), page_ops(lines)))
            .collect();
        let pdf = doc
            .with_pages(pdf_pages)
            .save(&PdfSaveOptions::default(), &mut Vec::new());
        SyntheticReport {
            patient_id: patient.0,
            patient_name: patient.1,
            exam_id,
            exams,
            pdf,
        }
    }

    /// A `w`×`h` grey exam image (a smooth radiograph-like field with noise), as JPEG, with the
    /// patient and exam it belongs to.
    pub fn image(&mut self, w: u32, h: u32) -> (String, String, Vec<u8>) {
        let patient = self.patient();
        let exam_id = format!("exm-{:07}", self.next_exam);
        self.next_exam += 1;
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
        let noise: u64 = self.rng.random();
        let img = image::GrayImage::from_fn(w, h, |x, y| {
            let d = ((x as f32 - cx).powi(2) / (cx * cx) + (y as f32 - cy).powi(2) / (cy * cy)).sqrt();
            let hash = (x as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add((y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
                ^ noise;
            let grain = (hash >> 59) as f32;
            image::Luma([((1.0 - d.min(1.0)) * 200.0 + grain) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .encode_image(&img)
            .expect("JPEG encoding of an in-memory image");
        (patient.0, exam_id, out)
    }
}

/// The drawing operations of one page: each line at its place, Helvetica 9 pt (bold for titles).
fn page_ops(lines: &[String]) -> Vec<Op> {
    let mut ops = Vec::with_capacity(lines.len() * 5);
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let title = line.chars().all(|c| !c.is_lowercase()) && line.chars().any(char::is_alphabetic);
        let (font, size) = if title {
            (BuiltinFont::HelveticaBold, 10.0)
        } else {
            (BuiltinFont::Helvetica, 8.5)
        };
        ops.extend([
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(font),
                size: Pt(size),
            },
            Op::SetTextCursor {
                pos: Point::new(Mm(16.0), Mm(280.0 - i as f32 * 4.6)),
            },
            Op::ShowText {
                items: vec![TextItem::Text(line.clone())],
            },
            Op::EndTextSection,
        ]);
    }
    ops
}
