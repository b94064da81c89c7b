pub async fn discover_once() {}
pub struct DiscoveryReport;
