// Package scoring serves a trained LightGBM "did not attend" model: it loads a model
// directory (model.txt plus its feature contract, contract.json), refuses any model whose
// text, objective, features or risk bands do not match that contract, and turns a booking's
// featurestore.Vector into a probability and a risk band.
//
// The model text is checked here before it reaches the leaves loader, because leaves trusts
// its input: a truncated file, a linear tree or a short feature vector would otherwise give
// wrong scores or a panic instead of an error. LightGBM 4.x writes version=v4, which leaves
// does not accept; the tree format leaves reads is unchanged since v3, so after validation
// the header line is rewritten (see docs/model.md for the evidence and the parity test).
//
// A loaded *Model is immutable and safe for concurrent use.
package scoring
