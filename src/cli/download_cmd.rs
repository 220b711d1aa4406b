//! `cliptrain download hf:ORG/NAME[@REVISION]`: a model from the Hugging Face Hub into the
//! cache ahead of time (for a node without network, then `HF_HUB_OFFLINE=1`); prints the folder.
use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The model: hf:ORG/NAME, hf:ORG/NAME@REVISION (a branch, a tag or a commit hash), OpenCLIP's
    /// hf-hub:ORG/NAME, or plain ORG/NAME. The cache is HF_HUB_CACHE (default HF_HOME/hub),
    /// the server HF_ENDPOINT, the token HF_TOKEN.
    pub model: String,
}

pub fn run(a: DownloadArgs) -> anyhow::Result<()> {
    let spelled = if a.model.contains(':') {
        a.model.clone()
    } else {
        format!("{}{}", cliptrain::hub::PREFIX, a.model)
    };
    let id = cliptrain::hub::parse(&spelled)?.with_context(|| {
        format!(
            "{:?} is not a model on the Hub: write hf:ORG/NAME or hf:ORG/NAME@REVISION",
            a.model
        )
    })?;
    let dir = cliptrain::hub::resolve(&id)?;
    tracing::info!(
        "{id} is in {}; model.init_from or --checkpoint = \"{id}\" use it, offline too \
         (HF_HUB_OFFLINE=1)",
        dir.display()
    );
    println!("{}", dir.display());
    Ok(())
}
