//! docstore pipeline (placeholder)
