//! The pages' words: Portuguese (pt-BR) first, English for browsers that ask for it before
//! Portuguese.

use axum::http::{HeaderMap, header};

/// Every word the pages show, in one language (each field is named for the word it holds).
#[derive(Debug)]
#[allow(missing_docs)]
pub struct Text {
    /// `lang` attribute.
    pub lang: &'static str,
    pub app: &'static str,
    pub not_for_production: &'static str,
    pub sign_in: &'static str,
    pub sign_in_oidc: &'static str,
    pub sign_out: &'static str,
    pub dev_sign_in: &'static str,
    pub dev_sign_in_help: &'static str,
    pub subject: &'static str,
    pub role: &'static str,
    pub patient_id: &'static str,
    pub patient_id_help: &'static str,
    pub oidc_only: &'static str,
    pub search: &'static str,
    pub query: &'static str,
    pub query_help: &'static str,
    pub patient: &'static str,
    pub exam: &'static str,
    pub kind: &'static str,
    pub any_kind: &'static str,
    pub from: &'static str,
    pub until: &'static str,
    pub fuzzy: &'static str,
    pub sort: &'static str,
    pub relevance: &'static str,
    pub newest: &'static str,
    pub results: &'static str,
    pub no_results: &'static str,
    pub previous: &'static str,
    pub next: &'static str,
    pub page: &'static str,
    pub thumbnail_of: &'static str,
    pub document: &'static str,
    pub version: &'static str,
    pub versions: &'static str,
    pub created: &'static str,
    pub by: &'static str,
    pub size: &'static str,
    pub media_type: &'static str,
    pub processing: &'static str,
    pub renditions: &'static str,
    pub open: &'static str,
    pub open_print: &'static str,
    pub download: &'static str,
    pub audit_trail: &'static str,
    pub when: &'static str,
    pub who: &'static str,
    pub what: &'static str,
    pub outcome: &'static str,
    pub upload: &'static str,
    pub upload_help: &'static str,
    pub files: &'static str,
    pub send: &'static str,
    pub my_exams: &'static str,
    pub my_exams_none: &'static str,
    pub share: &'static str,
    pub share_label: &'static str,
    pub share_days: &'static str,
    pub share_create: &'static str,
    pub share_created: &'static str,
    pub share_once: &'static str,
    pub links: &'static str,
    pub expires: &'static str,
    pub uses: &'static str,
    pub revoke: &'static str,
    pub revoked: &'static str,
    pub who_accessed: &'static str,
    pub who_accessed_help: &'static str,
    pub back: &'static str,
    pub not_found: &'static str,
    pub not_found_help: &'static str,
    pub error: &'static str,
    pub skip: &'static str,
    pub report: &'static str,
    pub image: &'static str,
    pub attachment: &'static str,
    pub ev_content: &'static str,
    pub ev_rendition: &'static str,
    pub ev_page: &'static str,
    pub ev_link: &'static str,
    pub ev_share: &'static str,
    pub ev_history: &'static str,
    pub ev_upload: &'static str,
    pub ev_other: &'static str,
}

/// Portuguese (Brazil).
pub static PT: Text = Text {
    lang: "pt-BR",
    app: "Exames",
    not_for_production: "Ambiente de desenvolvimento: entrada local, não usar em produção.",
    sign_in: "Entrar",
    sign_in_oidc: "Entrar com a conta da clínica",
    sign_out: "Sair",
    dev_sign_in: "Entrada de desenvolvimento",
    dev_sign_in_help: "Escolha um usuário e um papel. Só existe no modo embutido, sem provedor de identidade.",
    subject: "Usuário",
    role: "Papel",
    patient_id: "Paciente (para o papel paciente)",
    patient_id_help: "O identificador do paciente que este usuário é.",
    oidc_only: "Este servidor não tem entrada pelas páginas (configure --oidc-client-id); a API aceita os tokens do provedor OIDC.",
    search: "Busca",
    query: "Texto",
    query_help: "A sintaxe da linha de comando: palavras, \"frases entre aspas\", -excluir, OR.",
    patient: "Paciente",
    exam: "Exame",
    kind: "Tipo",
    any_kind: "qualquer",
    from: "De",
    until: "Até",
    fuzzy: "Aproximada (um erro por palavra)",
    sort: "Ordem",
    relevance: "relevância",
    newest: "mais recentes",
    results: "resultados",
    no_results: "Nenhum documento encontrado.",
    previous: "Anterior",
    next: "Próxima",
    page: "Página",
    thumbnail_of: "Miniatura de",
    document: "Documento",
    version: "Versão",
    versions: "Versões",
    created: "Criado em",
    by: "por",
    size: "Tamanho",
    media_type: "Formato",
    processing: "Processamento",
    renditions: "Derivados",
    open: "Abrir",
    open_print: "Abrir e imprimir",
    download: "Baixar",
    audit_trail: "Trilha de auditoria",
    when: "Quando",
    who: "Quem",
    what: "O quê",
    outcome: "Resultado",
    upload: "Enviar",
    upload_help: "Arraste arquivos para cá ou escolha-os; cada um vira um documento do exame.",
    files: "Arquivos",
    send: "Enviar arquivos",
    my_exams: "Meus exames",
    my_exams_none: "Nenhum resultado liberado ainda.",
    share: "Compartilhar com um médico",
    share_label: "Para quem",
    share_days: "Válido por (dias)",
    share_create: "Criar link",
    share_created: "Link criado. Copie-o agora: ele não será mostrado de novo.",
    share_once: "Link",
    links: "Links de compartilhamento",
    expires: "Expira em",
    uses: "Usos",
    revoke: "Revogar",
    revoked: "revogado",
    who_accessed: "Quem acessou meus exames",
    who_accessed_help: "Cada visualização e download dos seus documentos, do registro de auditoria (LGPD, art. 18).",
    back: "Voltar",
    not_found: "Não encontrado",
    not_found_help: "Este documento não existe ou você não tem acesso a ele.",
    error: "Não foi possível atender ao pedido",
    skip: "Ir para o conteúdo",
    report: "laudo",
    image: "imagem",
    attachment: "anexo",
    ev_content: "conteúdo aberto ou baixado",
    ev_rendition: "miniatura ou derivado visto",
    ev_page: "página do documento vista",
    ev_link: "aberto por um link compartilhado",
    ev_share: "links de compartilhamento",
    ev_history: "histórico de acessos visto",
    ev_upload: "versão enviada",
    ev_other: "outro acesso",
};

/// English.
pub static EN: Text = Text {
    lang: "en",
    app: "Exams",
    not_for_production: "Development environment: local sign-in, not for production.",
    sign_in: "Sign in",
    sign_in_oidc: "Sign in with the clinic's account",
    sign_out: "Sign out",
    dev_sign_in: "Development sign-in",
    dev_sign_in_help: "Pick a user and a role. Only on the embedded default, without an identity provider.",
    subject: "User",
    role: "Role",
    patient_id: "Patient (for the patient role)",
    patient_id_help: "The patient id this user is.",
    oidc_only: "This server has no page sign-in (configure --oidc-client-id); the API takes the OIDC provider's tokens.",
    search: "Search",
    query: "Text",
    query_help: "The command line's syntax: words, \"quoted phrases\", -exclude, OR.",
    patient: "Patient",
    exam: "Exam",
    kind: "Kind",
    any_kind: "any",
    from: "From",
    until: "Until",
    fuzzy: "Fuzzy (one typo per word)",
    sort: "Order",
    relevance: "relevance",
    newest: "newest",
    results: "results",
    no_results: "No document found.",
    previous: "Previous",
    next: "Next",
    page: "Page",
    thumbnail_of: "Thumbnail of",
    document: "Document",
    version: "Version",
    versions: "Versions",
    created: "Created",
    by: "by",
    size: "Size",
    media_type: "Format",
    processing: "Processing",
    renditions: "Renditions",
    open: "Open",
    open_print: "Open and print",
    download: "Download",
    audit_trail: "Audit trail",
    when: "When",
    who: "Who",
    what: "What",
    outcome: "Outcome",
    upload: "Upload",
    upload_help: "Drop files here or pick them; each becomes a document of the exam.",
    files: "Files",
    send: "Upload files",
    my_exams: "My exams",
    my_exams_none: "No results released yet.",
    share: "Share with a doctor",
    share_label: "For whom",
    share_days: "Valid for (days)",
    share_create: "Create link",
    share_created: "Link created. Copy it now: it is not shown again.",
    share_once: "Link",
    links: "Share links",
    expires: "Expires",
    uses: "Uses",
    revoke: "Revoke",
    revoked: "revoked",
    who_accessed: "Who accessed my exams",
    who_accessed_help: "Every view and download of your documents, from the audit log (LGPD, art. 18).",
    back: "Back",
    not_found: "Not found",
    not_found_help: "This document does not exist or you have no access to it.",
    error: "The request could not be served",
    skip: "Skip to content",
    report: "report",
    image: "image",
    attachment: "attachment",
    ev_content: "content opened or downloaded",
    ev_rendition: "thumbnail or rendition viewed",
    ev_page: "document page viewed",
    ev_link: "opened through a share link",
    ev_share: "share links",
    ev_history: "access history viewed",
    ev_upload: "version uploaded",
    ev_other: "other access",
};

/// The language a request asks for: the first of Portuguese or English in `Accept-Language`
/// (Portuguese when neither is named).
pub fn negotiate(headers: &HeaderMap) -> &'static Text {
    let Some(v) = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()) else {
        return &PT;
    };
    let mut best: Option<(f32, &'static Text)> = None;
    for part in v.split(',').take(16) {
        let mut it = part.trim().split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
            .unwrap_or(1.0);
        let text = if tag == "pt" || tag.starts_with("pt-") {
            &PT
        } else if tag == "en" || tag.starts_with("en-") {
            &EN
        } else {
            continue;
        };
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, text));
        }
    }
    best.map_or(&PT, |(_, t)| t)
}

impl Text {
    /// A document kind's name.
    pub fn kind_name(&self, kind: &str) -> &'static str {
        match kind {
            "report" => self.report,
            "image" => self.image,
            _ => self.attachment,
        }
    }
}

/// What a request's audit record says happened, in words (`None` for the library's own
/// records of the steps inside a request, which the pages do not list).
pub fn describe(t: &Text, action: &str, detail: Option<&str>) -> Option<&'static str> {
    if !action.starts_with("http.") {
        return None;
    }
    // The detail starts `METHOD ROUTE STATUS`.
    let route = detail.and_then(|d| d.split(' ').nth(1)).unwrap_or("");
    Some(match (action, route) {
        (_, "/v1/links/{token}") => t.ev_link,
        (_, r) if r.contains("/renditions/") => t.ev_rendition,
        (_, "/documentos/{id}") => t.ev_page,
        ("http.read", _) => t.ev_content,
        ("http.share", _) => t.ev_share,
        ("http.history", _) => t.ev_history,
        ("http.create" | "http.add_version", _) => t.ev_upload,
        _ => t.ev_other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(v: &str) -> &'static str {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, v.parse().unwrap());
        negotiate(&h).lang
    }

    #[test]
    fn portuguese_unless_english_comes_first() {
        assert_eq!(negotiate(&HeaderMap::new()).lang, "pt-BR");
        assert_eq!(lang("pt-BR,pt;q=0.9,en;q=0.8"), "pt-BR");
        assert_eq!(lang("en-US,en;q=0.9"), "en");
        assert_eq!(lang("de-DE,en;q=0.5,pt;q=0.7"), "pt-BR");
        assert_eq!(lang("fr"), "pt-BR");
    }

    #[test]
    fn only_request_records_are_described() {
        assert_eq!(describe(&PT, "key_unwrap", None), None);
        let d = |a, r: &str| describe(&EN, a, Some(&format!("GET {r} 200 role=patient")));
        assert_eq!(
            d("http.read", "/v1/documents/{id}/versions/{n}"),
            Some(EN.ev_content)
        );
        assert_eq!(
            d("http.read", "/v1/documents/{id}/versions/{n}/renditions/{stage}"),
            Some(EN.ev_rendition)
        );
        assert_eq!(d("http.read", "/v1/links/{token}"), Some(EN.ev_link));
        assert_eq!(d("http.read", "/documentos/{id}"), Some(EN.ev_page));
    }
}
