pub mod current;
