// make demo's ROOT macro: reads the events tree, fills a histogram, writes hist.root.
void hist() {
  TFile in("events.root");
  TTree *events = (TTree *)in.Get("events");
  double mass;
  events->SetBranchAddress("mass", &mass);
  TH1D h("mass", "Invariant mass;m [GeV];events", 30, 60.0, 120.0);
  for (Long64_t i = 0; i < events->GetEntries(); ++i) {
    events->GetEntry(i);
    h.Fill(mass);
  }
  TFile out("hist.root", "RECREATE");
  h.Write();
  out.Close();
  printf("filled %d events; mean %.2f GeV, rms %.2f GeV\n", (int)h.GetEntries(), h.GetMean(),
         h.GetRMS());
}
