//! SQL over the lake and the unflushed rows; the only crate with DataFusion.
