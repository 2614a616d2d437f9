//! Development doubles, for `llmlite dev` and the tests only (feature `dev`; no production build
//! has them): a wire-level Bedrock Runtime double on loopback and a throwaway PostgreSQL cluster.

pub mod bedrock_double;
pub mod embedded_pg;
