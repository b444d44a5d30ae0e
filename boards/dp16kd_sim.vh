// The behaviour of the ECP5 block RAM DP16KD for copperline.boards.bitstream_sim, inserted
// before the `endmodule` of yosys's DP16KD in share/ecp5/cells_sim.v (which declares the
// ports and parameters only, no behaviour). Covered, and checked on every instance of a
// netlist before it is simulated (bitstream_sim.check_dp16kd): the same DATA_WIDTH on
// both ports (1, 2, 4, 9, 18 true dual port; 36 = pseudo dual port: A writes, B reads),
// REGMODE "NOREG" or "OUTREG" (the word goes through one more register, clocked
// when OCE is high), zero INITVALs, chip selects matching CSDECODE, clocks not inverted,
// RSTA/RSTB tied low. Layout as yosys's brams_map_16kd.v drives the pins: the word
// address is AD[13:k] (k = 0, 1, 2, 3, 4, 5 for widths 1, 2, 4, 9, 18, 36); the 9-bit
// lanes of width 18 are enabled by AD[1:0], of width 36 by ADA[3:0]; width 36 writes
// {DIB, DIA} and reads {DOB, DOA}. A read latches the word at the clock edge (CE high);
// a write on the same port outputs per WRITEMODE (NORMAL: the output holds,
// WRITETHROUGH: the new word, READBEFOREWRITE: the old word); a read on one port of the
// word the other writes at the same edge sees the old word.
	localparam W = DATA_WIDTH_A;
	localparam K = W == 36 ? 5 : W == 18 ? 4 : W == 9 ? 3 : W == 4 ? 2 : W == 2 ? 1 : 0;
	localparam DEPTH = 16384 >> K;
	wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
	wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
	wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
	wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
	wire [35:0] mask = W == 36 ? {36{1'b1}} : (36'd1 << W) - 36'd1;
	wire [3:0] lanes_a = W == 36 ? ada[3:0] : W == 18 ? {2'b00, ada[1:0]} : 4'b1111;
	wire [3:0] lanes_b = W == 18 ? {2'b00, adb[1:0]} : 4'b1111;
	wire [35:0] wd_a = W == 36 ? {dib, dia} : {18'd0, dia} & mask;
	wire [35:0] wd_b = {18'd0, dib} & mask;
	wire [13:0] ia = ada >> K;
	wire [13:0] ib = adb >> K;
	wire cs_a = {CSA2, CSA1, CSA0} == 3'b000;
	wire cs_b = {CSB2, CSB1, CSB0} == 3'b000;

	reg [35:0] mem [0:DEPTH-1];
	reg [35:0] do_a = 36'd0, do_b = 36'd0;
	integer n;
	initial for (n = 0; n < DEPTH; n = n + 1) mem[n] = 36'd0;

	function [35:0] merged(input [35:0] old, input [35:0] data, input [3:0] lanes);
		merged = {lanes[3] ? data[35:27] : old[35:27], lanes[2] ? data[26:18] : old[26:18],
		          lanes[1] ? data[17:9] : old[17:9], lanes[0] ? data[8:0] : old[8:0]};
	endfunction

	always @(posedge CLKA)
		if (CEA && cs_a) begin
			if (WEA) begin
				mem[ia] <= merged(mem[ia], wd_a, lanes_a);
				if (W != 36 && WRITEMODE_A == "WRITETHROUGH") do_a <= merged(mem[ia], wd_a, lanes_a);
				else if (W != 36 && WRITEMODE_A == "READBEFOREWRITE") do_a <= mem[ia];
			end else if (W != 36)
				do_a <= mem[ia];
		end

	always @(posedge CLKB)
		if (CEB && cs_b) begin
			if (W != 36 && WEB) begin
				mem[ib] <= merged(mem[ib], wd_b, lanes_b);
				if (WRITEMODE_B == "WRITETHROUGH") do_b <= merged(mem[ib], wd_b, lanes_b);
				else if (WRITEMODE_B == "READBEFOREWRITE") do_b <= mem[ib];
			end else
				do_b <= mem[ib];
		end

	reg [35:0] q_a = 36'd0, q_b = 36'd0;   // the output registers of REGMODE "OUTREG"
	always @(posedge CLKA) if (OCEA) q_a <= do_a;
	always @(posedge CLKB) if (OCEB) q_b <= do_b;
	wire [35:0] ra = REGMODE_A == "OUTREG" ? q_a : do_a;
	wire [35:0] rb = REGMODE_B == "OUTREG" ? q_b : do_b;
	wire [17:0] oa = W == 36 ? rb[17:0] : ra[17:0];
	wire [17:0] ob = W == 36 ? rb[35:18] : rb[17:0];
	assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = oa;
	assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = ob;
