//! Text analysis for Portuguese: the word analyser (split, lower-case, ASCII-fold, stem) and the
//! pair analyser that indexes adjacent words as one term for phrase lookups.

use tantivy::tokenizer::{
    AsciiFoldingFilter, BoxTokenStream, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Name of the Portuguese analyser in the index's tokenizer registry.
pub const PT_ANALYZER: &str = "pt_folded";

/// Name of the analyser that indexes each pair of adjacent analysed words as one term, so a
/// phrase is looked up like a word instead of by intersecting the positions of common words
/// (the idea of Elasticsearch's `index_phrases`).
pub const PAIR_ANALYZER: &str = "pt_pairs";

/// Joins the two words of a pair term. The word tokenizer splits on it, so no word holds it.
pub(crate) const PAIR_SEPARATOR: char = ' ';

pub(crate) fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(48))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::Portuguese))
        .build()
}

/// The words of [`analyzer`], paired: "colesterol total hdl" gives "colesterol total" at
/// position 0 and "total hdl" at 1. Words with a gap between them (a dropped over-long word)
/// make no pair.
#[derive(Clone)]
pub(crate) struct PairTokenizer(pub(crate) TextAnalyzer);

pub(crate) struct PairStream<'a> {
    pub(crate) words: BoxTokenStream<'a>,
    pub(crate) previous: Option<Token>,
    pub(crate) pair: Token,
}

impl Tokenizer for PairTokenizer {
    type TokenStream<'a> = PairStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PairStream<'a> {
        PairStream {
            words: self.0.token_stream(text),
            previous: None,
            pair: Token::default(),
        }
    }
}

impl TokenStream for PairStream<'_> {
    fn advance(&mut self) -> bool {
        while self.words.advance() {
            let word = self.words.token();
            let paired = match &self.previous {
                Some(first) if first.position + 1 == word.position => {
                    let pair = &mut self.pair;
                    pair.text.clear();
                    pair.text.push_str(&first.text);
                    pair.text.push(PAIR_SEPARATOR);
                    pair.text.push_str(&word.text);
                    pair.offset_from = first.offset_from;
                    pair.offset_to = word.offset_to;
                    pair.position = first.position;
                    pair.position_length = 1;
                    true
                }
                _ => false,
            };
            match &mut self.previous {
                Some(first) => first.clone_from(word),
                None => self.previous = Some(word.clone()),
            }
            if paired {
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        &self.pair
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.pair
    }
}

/// Positions of the words `analyzer` makes of `phrase`, if they follow each other (`None`
/// when there is a gap).
pub(crate) fn adjacent_words(words: &mut TextAnalyzer, phrase: &str) -> Option<usize> {
    let mut stream = words.token_stream(phrase);
    let mut count = 0;
    let mut last: Option<usize> = None;
    while stream.advance() {
        let at = stream.token().position;
        if last.is_some_and(|l| l + 1 != at) {
            return None;
        }
        last = Some(at);
        count += 1;
    }
    Some(count)
}
